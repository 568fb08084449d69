"""The Python entry points fitnets.train / fitnets.distill: the CLI's runs, returned."""

from __future__ import annotations

import json

import pytest
import torch

import fitnets
from fitnets.errors import FitnetsError

FAST = {"device": "cpu", "data": {"name": "mnist", "download": False, "val_size": 40,
                                  "batch_size": 32},
        "train": {"optim": {"name": "adam", "lr": 0.003}}}


def test_train_then_distill_from_python(tiny_mnist, tmp_path):
    data = {**FAST["data"], "root": tiny_mnist}
    t = fitnets.train(device="cpu", data=data, train={**FAST["train"], "epochs": 2},
                      model={"name": "mnist_teacher"}, out=tmp_path / "teacher", verbose=False)
    assert t.run_dir == tmp_path / "teacher"
    assert t.summary == json.loads((t.run_dir / "summary.json").read_text())
    s = fitnets.distill(device="cpu", data=data, train={**FAST["train"], "epochs": 1},
                        teacher={"weights": t.run_dir}, method="fitnet",
                        overrides=["hints.stage.epochs=1", "hints.stage.optim.name=adam"],
                        out=tmp_path / "student", verbose=False)
    assert [st["name"] for st in s.summary["stages"]] == ["hints:0", "kd"]
    assert isinstance(s.model, torch.nn.Module) and not s.model.training
    # the returned network is the trained one: its test accuracy is the summary's
    from fitnets.config import make_config
    from fitnets.data.prepare import prepare

    test = prepare(make_config(None, settings={"data": data}).data, torch.device("cpu")).data.test
    with torch.no_grad():
        acc = (s.model(test.x).argmax(1) == test.y).float().mean().item()
    assert acc == pytest.approx(s.summary["test_acc"])


def test_resume_from_python_and_its_refusals(tiny_mnist, tmp_path):
    data = {**FAST["data"], "root": tiny_mnist}
    out = tmp_path / "r"
    first = fitnets.train(device="cpu", data=data, train={**FAST["train"], "epochs": 1},
                          out=out, verbose=False)
    again = fitnets.train(resume=out, verbose=False)  # a finished run: nothing left to train
    assert again.summary["epochs"] == first.summary["epochs"] == {"train": 1}
    with pytest.raises(FitnetsError, match="takes its config from the run directory"):
        fitnets.train(resume=out, train={"epochs": 3})
    with pytest.raises(FitnetsError, match="unknown"):
        fitnets.distill(trian={"epochs": 1}, verbose=False)


def test_the_entry_points_live_beside_the_subpackages_of_the_same_name():
    import importlib

    import fitnets.distill.stages as stages  # the subpackage still imports as usual

    assert callable(fitnets.distill) and callable(fitnets.train)
    assert stages.__name__ == "fitnets.distill.stages"
    assert fitnets.distill is importlib.import_module("fitnets.distill")
    assert fitnets.Result.__name__ == "Result"
