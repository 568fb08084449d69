"""fitnets search refuses, before any trial runs and without Optuna, what cannot work: each
refusal names the problem and the choices, and leaves no search directory behind (the CLI
turns it into exit code 2, tested once)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fitnets.errors import FitnetsError
from fitnets.search.command import prepare

# integration: PyYAML, scikit-learn (.ci/run's locked run checks these under its pins)
pytestmark = pytest.mark.integration

pytest.importorskip("sklearn")


@pytest.fixture(autouse=True)
def _no_optuna(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # a refusal comes before the study


@pytest.fixture
def recipe(tmp_path, digits) -> Path:
    weights = tmp_path / "teacher.pt"
    weights.write_bytes(b"")  # the check reads no weights: a trial loads them
    path = tmp_path / "digits-fitnet.yaml"
    path.write_text(yaml.safe_dump(dict(digits, teacher={"name": "digits_teacher",
                                                         "weights": str(weights)})))
    return path


def refused(recipe: Path, overrides=(), space=(), budget=()) -> str:
    out = recipe.parent / "s"
    with pytest.raises(FitnetsError) as e:
        prepare(str(recipe), list(overrides), out, trials=4, storage=None, study=None,
                space_texts=list(space), budget_texts=list(budget), parallel=1)
    assert not out.exists()  # nothing written, no trial started
    return " ".join(str(e.value).split())


@pytest.mark.parametrize("where", ["override", "budget"])
def test_no_validation_split(recipe, where):
    said = refused(recipe, ["data.val_size=0"] if where == "override" else [],
                   budget=["data.val_size=0"] if where == "budget" else [])
    assert "a search selects on a validation split" in said and "digits without one" in said
    assert "data.val_size=N" in said
    assert ("set by the budget or the space: data.val_size=0" in said) == (where == "budget")


def test_a_recipe_pair_the_student_lacks(recipe):
    said = refused(recipe, ["hints.pairs=[[conv9, conv2]]"])
    assert said.startswith("the recipe's hint pair hints.pairs=[[conv9, conv2]]: the student "
                           "'digits_student' has no layer 'conv9'; its layers: conv1, conv2")


def test_a_pair_the_regressor_cannot_map(recipe):
    said = refused(recipe, space=["pair=conv4/conv1", "hints.regressor=conv"])
    assert said.startswith("--space pair 'conv4/conv1' with hints.regressor=conv:")


def test_a_recipe_pair_that_is_not_searched_is_checked_too(recipe):
    said = refused(recipe, ["hints.pairs=[[conv3, conv2], [conv3, conv8]]"],
                   space=["pair=", "hints.regressor="])
    assert "the recipe's hints.pairs [conv3, conv8]: the teacher 'digits_teacher' has no " \
           "layer 'conv8'; its layers: conv1, conv2" in said


def test_a_value_only_some_trials_take(recipe):
    """Each trial's config is built: a budget that no trial's data can hold is named."""
    said = refused(recipe, space=["data.val_size=0,300"])
    assert "validation split" in said and "space: data.val_size=0" in said


def test_a_teacher_without_weights(recipe):
    assert "teacher.weights=" in refused(recipe, ["teacher.weights=null"])
    assert "does not exist" in refused(recipe, ["teacher.weights=/nowhere/teacher"])


def test_a_method_with_nothing_to_search(recipe):
    said = refused(recipe, ["method=backprop"])
    assert said.startswith("method=backprop offers nothing to search")
    assert "fitnet, kd, joint" in said


def test_the_command_line_exits_2_before_any_trial(recipe):
    out = recipe.parent / "cli"
    r = subprocess.run([sys.executable, "-m", "fitnets", "search", str(recipe), "--out",
                        str(out), "--space", "pair=c9/conv2", "--trials", "6"],
                       capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert r.returncode == 2, r.stderr
    assert "has no layer 'c9'" in r.stderr and not out.exists()
