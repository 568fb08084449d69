"""No host sync inside a training step (issue 24): fitnets' own code reads no device value
per step, on any stage kind; loss sums and the non-finite flag are read once an epoch."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from fitnets.config import make_config
from fitnets.run import run
from fitnets.trainer import Trainer

# the Tensor methods that copy a value to the host (a device sync on an accelerator)
SYNCS = ("item", "__float__", "__int__", "__bool__", "tolist", "cpu", "numpy")
OURS = f"{os.sep}fitnets{os.sep}"


@pytest.fixture
def count_syncs(monkeypatch):
    """Counts the sync calls made by fitnets' code (not torch's own internals) while a
    Trainer.train_epoch runs; returns the list of per-epoch counts."""
    counts: list[int] = []
    inside = [False]
    for name in SYNCS:
        real = getattr(torch.Tensor, name)

        def wrapper(self, *a, _real=real, **k):
            caller = sys._getframe(1).f_code.co_filename
            if inside[0] and OURS in caller and f"{os.sep}tests{os.sep}" not in caller:
                counts[-1] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    real_epoch = Trainer.train_epoch

    def epoch(self, *a, **k):
        counts.append(0)
        inside[0] = True
        try:
            return real_epoch(self, *a, **k)
        finally:
            inside[0] = False

    monkeypatch.setattr(Trainer, "train_epoch", epoch)
    return counts


def _teacher(root, tmp_path):
    out = tmp_path / "teacher"
    run(make_config(None, [*BASE, f"data.root={root}", "model.name=mnist_teacher",
                           "train.epochs=1"]), "train", out, verbose=False)
    return out


BASE = ["device=cpu", "data.name=mnist", "data.download=false", "data.val_size=20",
        "data.batch_size=20", "train.optim.name=adam", "hints.stage.optim.name=adam"]


@pytest.mark.parametrize("method", ["fitnet", "joint", "kd", "backprop"])
def test_a_step_reads_nothing_from_the_device(tiny_mnist, tmp_path, count_syncs, method):
    teacher = _teacher(tiny_mnist, tmp_path)
    count_syncs.clear()
    per_run = []
    for limit in (60, 140):  # 2 and 6 steps an epoch (20 images held out for validation)
        before = len(count_syncs)
        run(make_config(None, [*BASE, f"data.root={tiny_mnist}", f"method={method}",
                               f"data.train_limit={limit}", f"teacher.weights={teacher}",
                               "hints.stage.epochs=1", "train.epochs=1"]),
            "distill", tmp_path / f"{method}-{limit}", verbose=False)
        per_run.append(count_syncs[before:])
    short, long = per_run
    assert len(short) == len(long) >= 1
    # the reads left are per epoch (the loss sums and the non-finite flag), not per step
    assert short == long, (short, long)
    assert all(n <= 8 for n in long), long
