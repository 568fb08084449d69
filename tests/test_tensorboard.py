"""The optional TensorBoard hook of the metrics log (config key ``tensorboard``)."""

from __future__ import annotations

import builtins
import json

import pytest

from fitnets.config import make_config
from fitnets.errors import FitnetsError
from fitnets.runlog import RunLog

# integration: tensorboard (.ci/run's locked run checks these under its pins)
pytestmark = pytest.mark.integration


def test_off_by_default_and_documented():
    from fitnets.config import describe

    assert make_config().tensorboard is False
    assert any(k == "tensorboard" and doc for k, _, doc in describe())


def test_missing_tensorboard_names_the_extra(monkeypatch, tmp_path):
    real = builtins.__import__

    def no_tb(name, *a, **k):
        if name.startswith(("torch.utils.tensorboard", "tensorboard")):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tb)
    with pytest.raises(FitnetsError, match=r"pip install 'fitnets\[tensorboard\]'"):
        RunLog(tmp_path, tensorboard=True)


def test_metrics_are_written_as_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    state = RunLog(tmp_path, verbose=False, tensorboard=True)
    state.log({"stage": "hints", "pair": 0, "epoch": 1, "train_loss": 2.5, "time": 0.1})
    state.log({"stage": "kd", "epoch": 1, "lambda": 4.0, "test_acc": 0.5, "time": 0.1})
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["pair"] == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"hints:0/train_loss", "kd/lambda", "kd/test_acc"} <= tags
    assert acc.Scalars("kd/lambda")[0].value == 4.0
