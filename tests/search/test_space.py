"""fitnets search's space, without Optuna: every test here runs with ``import optuna``
failing (the space, the probe and the checks never import it; the modules' own imports are
read too). By hand: ``python -c "import sys; sys.modules['optuna'] = None; import pytest;
sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/search/test_space.py',
'tests/search/test_refusals.py']))"``."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import fitnets.search
from fitnets.config import make_config
from fitnets.distill.regressor import possible_kinds
from fitnets.distill.suggest import middle_distance, suggest_pairs
from fitnets.errors import FitnetsError
from fitnets.models import build_model
from fitnets.search.space import build_space, parse_dim, recipe_values

SEARCH = Path(fitnets.search.__file__).parent


@pytest.fixture(autouse=True)
def _no_optuna(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError


def test_the_space_modules_import_neither_optuna_nor_subprocess():
    for name in ("space.py", "probe.py", "check.py"):
        tree = ast.parse((SEARCH / name).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                    for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom)}
        assert not imported & {"optuna", "subprocess"}, name
        assert "fitnets" in imported
    for path in SEARCH.glob("*.py"):  # no module over 300 lines, none names a method
        text = path.read_text()
        assert len(text.splitlines()) <= 300, path.name
        assert '"fitnet"' not in text and '"joint"' not in text and '"kd"' not in text


def test_space_is_derived_from_the_model_pair(digits):
    cfg = make_config(None, [], base=digits)
    space, rows = build_space(cfg, 3, {})
    # the pairs: the 3 possible pairs nearest the middle, as fitnets layers ranks them
    every = suggest_pairs(build_model("digits_student"), build_model("digits_teacher"),
                          (1, 8, 8), "auto")
    possible = sorted((r for r in every if r["possible"]), key=middle_distance)
    default = next(r for r in every if r["default"])
    assert space["pair"].choices[0] == f"{default['guided']}/{default['hint']}"
    assert len(space["pair"].choices) == 3
    expected = [default] + [r for r in possible if r is not default][:2]
    assert space["pair"].choices == [f"{r['guided']}/{r['hint']}" for r in expected]
    # every regressor kind offered fits every pair offered; fc (huge) is not offered
    kinds = space["hints.regressor"].choices
    assert kinds and "fc" not in kinds
    for r in rows:
        assert set(kinds) <= set(possible_kinds(r["guided_shape"], r["hint_shape"]))
    # tau, lambda and the hint lr around the recipe's; the first trial is the recipe itself
    assert space["kd.tau"].low <= 3.0 <= space["kd.tau"].high and space["kd.tau"].log
    lr = space["hints.stage.optim.lr"]
    assert lr.low == pytest.approx(0.001) and lr.high == pytest.approx(0.1)
    first = recipe_values(cfg, space)
    assert first == {"pair": space["pair"].choices[0], "hints.stage.optim.lr": 0.01,
                     "kd.tau": 3.0, "kd.lambda_init": 4.0}


def test_the_recipes_own_pair_is_offered_first(digits):
    """A recipe's hint pair outside the pairs nearest the middle is still the first trial's."""
    cfg = make_config(None, ["hints.pairs=[[conv1, conv1]]"], base=digits)
    space, rows = build_space(cfg, 2, {})
    assert space["pair"].choices[0] == "conv1/conv1" and len(space["pair"].choices) == 2
    assert recipe_values(cfg, space)["pair"] == "conv1/conv1"


def test_space_for_kd_has_no_pairs_and_can_be_narrowed_widened_and_cut(digits):
    cfg = make_config(None, ["method=kd"], base=digits)
    space, rows = build_space(cfg, 4, {"kd.tau": "2,3,4", "kd.lambda_init": "",
                                       "train.optim.lr": "1e-4:1e-2:log"})
    assert rows == [] and "pair" not in space and "hints.regressor" not in space
    assert space["kd.tau"].choices == [2, 3, 4]
    assert "kd.lambda_init" not in space
    lr = space["train.optim.lr"]
    assert (lr.low, lr.high, lr.log, lr.integer) == (1e-4, 1e-2, True, False)
    ints = parse_dim("train.epochs", "2:6")
    assert ints.integer and (ints.low, ints.high) == (2, 6)
    pairs = parse_dim("pair", [["conv4", "conv2"], "conv3/conv2"])
    assert pairs.choices == ["conv4/conv2", "conv3/conv2"]


@pytest.mark.parametrize("extra, message", [
    ({"kd.taus": "2,3"}, "unknown config key 'kd.taus'"),
    ({"kd.tau": "8:1"}, "low < high"),
    ({"kd.tau": "0:2:log"}, "log range needs low > 0"),
    ({"kd.tau": "1:2:ln"}, "LOW:HIGH:log"),
    ({"pair": "conv4"}, "GUIDED/HINT"),
    ({"hints.regressor": "conv,bogus"}, "hints.regressor"),
    # a layer the student lacks, named with the layers it has
    ({"pair": "c9/conv2"}, r"--space pair 'c9/conv2': the student 'digits_student' has no "
                           r"layer 'c9'; its layers: conv1, conv2, conv3, conv4, conv5, conv6"),
    ({"pair": "conv3/fc9"}, "the teacher 'digits_teacher' has no layer 'fc9'"),
])
def test_bad_space_entries_are_named(extra, message, digits):
    cfg = make_config(None, [], base=digits)
    with pytest.raises(FitnetsError, match=message):
        build_space(cfg, 4, extra)


def test_pairs_belong_to_methods_with_hint_stages(digits):
    cfg = make_config(None, ["method=kd"], base=digits)
    with pytest.raises(FitnetsError, match="method=kd has no hint stage; use method=fitnet or "
                                           "joint"):
        build_space(cfg, 4, {"pair": "conv3/conv2"})


def test_the_recipes_search_section_narrows_the_space_and_the_command_line_wins(digits):
    recipe = dict(digits, search={"pairs": 2, "space": {
        "kd.tau": [2, 3], "pair": [["conv3", "conv2"], "conv4/conv2"],
        "kd.lambda_init": None, "hints.stage.optim.lr": {"low": 0.001, "high": 0.1, "log": True}}})
    cfg = make_config(None, [], base=recipe)
    space, _ = build_space(cfg, cfg.search.pairs, {"kd.tau": "4,5"})
    assert space["pair"].choices == ["conv3/conv2", "conv4/conv2"]
    assert "kd.lambda_init" not in space
    assert space["kd.tau"].choices == [4, 5]  # --space over the recipe's section
    lr = space["hints.stage.optim.lr"]
    assert (lr.low, lr.high, lr.log) == (0.001, 0.1, True)
    assert recipe_values(cfg, space) == {"pair": "conv3/conv2", "hints.stage.optim.lr": 0.01}
