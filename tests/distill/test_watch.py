"""Signs that a hint stage stopped learning: the pure checks and the warning of a real run."""

from __future__ import annotations

import pytest
import torch

from fitnets.config import make_config
from fitnets.distill import watch
from fitnets.distill.hint import hint_reduction


def test_loss_stalled_by_hand():
    assert not watch.loss_stalled([5.0, 4.0])  # too few epochs to say
    assert watch.loss_stalled([9.0, 273.9, 262.0, 261.9, 261.8])  # the measured freeze
    assert not watch.loss_stalled([0.196, 0.056, 0.035, 0.027])  # the mean reduction's run
    assert not watch.loss_stalled([1.0, 0.9995, 0.99])  # 1% is still moving
    assert watch.loss_stalled([1.0, 0.9995, 0.9991])  # 0.09%: not
    assert not watch.loss_stalled([0.0, 0.0, 0.0])  # solved, not stuck


def test_constant_output_by_hand():
    assert watch.constant_output(torch.zeros(8, 32, 4, 4))  # a dead ReLU
    x = torch.zeros(16, 10)
    x[0, 0] = 1.0  # 1 value in 160 is not zero: still dead (over 99% zeros)
    assert watch.constant_output(x)
    assert watch.constant_output(torch.full((8, 5), 3.0))  # the same for every image
    assert not watch.constant_output(torch.randn(8, 5))
    assert not watch.constant_output(torch.randn(1, 5))  # one image says nothing


def test_projection_regressors_default_to_the_mean_and_the_paper_keeps_its_sum():
    cfg = make_config(None, [])
    assert hint_reduction(cfg, joint=False, kind="conv") == "paper"
    assert hint_reduction(cfg, joint=False, kind="fc") == "paper"
    for kind in ("conv1x1", "strided", "transposed", "interp"):
        assert hint_reduction(cfg, joint=False, kind=kind) == "mean"
    assert hint_reduction(cfg, joint=True, kind="conv") == "mean"
    forced = make_config(None, ["hints.reduction=paper"])
    assert hint_reduction(forced, joint=False, kind="conv1x1") == "paper"


def test_a_dead_regressor_is_reported_once_with_what_to_try(tmp_path, capsys, monkeypatch):
    """A real run of the user's pair (resnet56 -> resnet20, layer2 -> layer2, conv1x1, SGD
    lr 0.05, momentum 0.9, the paper's summed loss) whose regressor is dead from the start
    (its batch norm shifted far below zero, as the measured divergence left it)."""
    from PIL import Image

    import fitnets.distill.hint as hint
    from fitnets.models import build_model
    from fitnets.run import run

    real_init = hint.init_regressor_

    def dead(regressor, how):
        regressor = real_init(regressor, how)
        bn = [m for m in regressor.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
        torch.nn.init.zeros_(bn.weight)
        torch.nn.init.constant_(bn.bias, -1e3)
        return regressor

    monkeypatch.setattr(hint, "init_regressor_", dead)
    root = tmp_path / "imgs"
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 16), ("test", 4)):
        for c in range(3):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                a = (torch.rand(32, 32, 3, generator=g) * 255).byte().numpy()
                Image.fromarray(a).save(root / split / f"c{c}" / f"{i}.png")
    torch.manual_seed(0)
    torch.save(build_model("resnet56", num_classes=3).state_dict(), tmp_path / "t.pt")
    cfg = make_config(None, [
        "device=cpu", "data.name=folder", f"data.path={root}", f"data.root={tmp_path}",
        "data.val_size=12", "data.batch_size=12", "data.preprocess=standardize",
        "teacher.name=resnet56", f"teacher.weights={tmp_path / 't.pt'}", "student.name=resnet20",
        "hints.pairs=[[layer2, layer2]]", "hints.regressor=conv1x1", "hints.reduction=paper",
        "hints.stage.optim.name=sgd", "hints.stage.optim.lr=0.05",
        "hints.stage.optim.momentum=0.9", "hints.stage.epochs=2", "train.epochs=0"])
    run(cfg, "distill", tmp_path / "r")
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert warnings == [line for line in warnings if "[hints/0]" in line] and len(warnings) == 1
    assert "the regressor's output is the same for every image (100% zeros" in warnings[0]
    assert "hints.stage.optim.lr (now 0.05)" in warnings[0]
    assert "hints.reduction=mean (now paper" in warnings[0] and "8,192 values" in warnings[0]


def test_a_projection_obeys_an_explicit_nonlinearity():
    from torch import nn

    from fitnets.distill.regressor import Nonlinearity, build_regressor
    from fitnets.errors import FitnetsError

    relu = build_regressor((16, 8, 8), (32, 8, 8), "conv1x1")  # the default: BN then ReLU
    bare = build_regressor((16, 8, 8), (32, 8, 8), "conv1x1", Nonlinearity("none"))
    assert isinstance(list(relu)[-1], nn.ReLU) and isinstance(list(bare)[-1], nn.BatchNorm2d)
    with pytest.raises(FitnetsError, match="relu or nothing, not maxout"):
        build_regressor((16, 8, 8), (32, 8, 8), "conv1x1", Nonlinearity("maxout", 2))
