"""No host sync inside a training step (issue 24): fitnets' own code reads no device value
per step, on any stage kind; loss sums and the non-finite flag are read once an epoch."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from fitnets import trainer as trainer_module
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run by "
                    "benchmarks/gpu_check.sh on a GPU)")
@pytest.mark.parametrize("method,extra", [
    ("fitnet", ["data.augment_pad=2"]),
    ("joint", ["data.augment_pad=2"]),
    ("kd", ["data.augment_pad=0", "data.augment_flip=true", "perf.teacher_cache=memory"]),
    ("kd", ["data.augment_pad=0", "data.augment_flip=true", "perf.teacher_cache=disk"]),
    ("backprop", ["data.augment_pad=2", "data.augment_flip=true"]),
])
def test_no_step_synchronises_the_cuda_stream(tiny_mnist, tmp_path, monkeypatch, method,
                                              extra):
    # torch's own sync checker, raised as an error inside every training epoch: catches
    # what the Tensor wrappers above cannot, e.g. a blocking host-to-device copy (torch
    # waits for the stream after it) of the batch's rows or augmentation draws
    teacher = _teacher(tiny_mnist, tmp_path)
    real_epoch = Trainer.train_epoch
    checked = []

    def epoch(self, *a, **k):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = real_epoch(self, *a, **k)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        checked.append(1)
        return out

    monkeypatch.setattr(Trainer, "train_epoch", epoch)
    # the per-epoch reads at the end of train_epoch are allowed: they are outside the steps
    for name in ("_floats", "_raise_if_bad"):
        monkeypatch.setattr(trainer_module, name, _synced(getattr(trainer_module, name)))
    run(make_config(None, [*BASE, "device=cuda", f"data.root={tiny_mnist}", f"method={method}",
                           "data.train_limit=140", f"teacher.weights={teacher}",
                           "hints.stage.epochs=1", "train.epochs=1", *extra]),
        "distill", tmp_path / method, verbose=False)
    assert checked


def _synced(fn):
    """``fn`` with torch's sync checker off while it runs (a read allowed once an epoch)."""
    def wrapper(*a, **k):
        mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("default")
        try:
            return fn(*a, **k)
        finally:
            torch.cuda.set_sync_debug_mode(mode)
    return wrapper


@pytest.mark.parametrize("extra", [["data.augment_pad=2", "data.augment_flip=true"],
                                   ["data.augment_pad=0", "data.augment_flip=true",
                                    "perf.teacher_cache=memory"]])
def test_every_device_move_inside_an_epoch_is_non_blocking(tiny_mnist, tmp_path, monkeypatch,
                                                            extra):
    # on a GPU a blocking .to(device) of the batch's rows or augmentation draws waits for
    # the stream; here (CPU) the same calls are made, so the flag they pass is checked
    teacher = _teacher(tiny_mnist, tmp_path)
    moves: list[tuple[str, int, bool]] = []
    inside = [False]
    real_to = torch.Tensor.to

    def to(self, *a, **k):
        frame = sys._getframe(1)
        where = frame.f_code.co_filename
        device_arg = any(isinstance(v, (torch.device, str)) for v in (*a, *k.values()))
        if inside[0] and OURS in where and device_arg:
            moves.append((os.path.basename(where), frame.f_lineno, bool(k.get("non_blocking"))))
        return real_to(self, *a, **k)

    real_epoch = Trainer.train_epoch

    def epoch(self, *a, **k):
        inside[0] = True
        try:
            return real_epoch(self, *a, **k)
        finally:
            inside[0] = False

    monkeypatch.setattr(torch.Tensor, "to", to)
    monkeypatch.setattr(Trainer, "train_epoch", epoch)
    run(make_config(None, [*BASE, f"data.root={tiny_mnist}", "method=fitnet",
                           "data.train_limit=100", f"teacher.weights={teacher}",
                           "hints.stage.epochs=1", "train.epochs=1", *extra]),
        "distill", tmp_path / "run", verbose=False)
    files = {m[0] for m in moves}
    assert "memory.py" in files and "augment.py" in files, moves
    assert all(m[2] for m in moves), [m for m in moves if not m[2]]
