"""perf.cuda_graphs (issue 24, item 4): where CUDA graphs are used, refused, and how the
Trainer feeds them (a graph replays one shape: an epoch's last, smaller batch runs eagerly).

The CPU tests check the choices and the Trainer's routing of batches; the CUDA test (run by
benchmarks/gpu_check.sh) checks that a graphed run trains as the ungraphed compiled one does.
(tests/test_compile_stages.py checks compiled against eager on the CPU.)
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from fitnets.config import PerfConfig, make_config
from fitnets.data.memory import Arrays, Data
from fitnets.distill.stages import LabelStage
from fitnets.errors import FitnetsError
from fitnets.perf import Perf, resolve_perf
from fitnets.run import run
from fitnets.trainer import Trainer

CUDA = torch.device("cuda")  # a device object only: resolve_perf with fp32 asks no GPU


def test_cuda_graphs_are_used_with_compile_on_one_gpu_and_refused_where_they_cannot_run():
    cpu = torch.device("cpu")
    fp32 = {"precision": "fp32", "channels_last": False}
    assert resolve_perf(PerfConfig(**fp32, compile=True), cpu).cuda_graphs is False
    on = resolve_perf(PerfConfig(**fp32, compile=True), CUDA)
    assert on.cuda_graphs and on.compile and "with CUDA graphs" in on.describe()
    assert not resolve_perf(PerfConfig(**fp32), CUDA).cuda_graphs  # auto: only when compiled
    assert not resolve_perf(PerfConfig(**fp32, compile=True), CUDA, processes=2).cuda_graphs
    forced = resolve_perf(PerfConfig(**fp32, cuda_graphs=True), CUDA)
    assert forced.cuda_graphs and forced.compile  # true turns compile on
    assert not resolve_perf(PerfConfig(**fp32, compile=True, cuda_graphs=False),
                            CUDA).cuda_graphs
    with pytest.raises(FitnetsError, match=r"cuda_graphs=true needs a CUDA device.*auto.*false"):
        resolve_perf(PerfConfig(**fp32, cuda_graphs=True), cpu)
    with pytest.raises(FitnetsError, match=r"2 processes.*all-reduce.*auto or false"):
        resolve_perf(PerfConfig(**fp32, cuda_graphs=True), CUDA, processes=2)
    # the config key reads YAML's spellings
    assert make_config(None, ["perf.cuda_graphs=true"]).perf.cuda_graphs is True
    with pytest.raises(FitnetsError, match="perf.cuda_graphs"):
        make_config(None, ["perf.cuda_graphs=always"])


class Counted:
    """``fn`` with the batch sizes it was called on."""

    def __init__(self, fn):
        self.fn, self.sizes = fn, []

    def __call__(self, batch):
        self.sizes.append(len(batch))
        return self.fn(batch)


def _stage(n: int, batch: int):
    torch.manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
    data = Data(Arrays(x, y), None, Arrays(x[:10], y[:10]), batch, 64)
    cfg = make_config(None, ["train.optim.name=sgd", "train.optim.lr=0.1"])
    return student, data, LabelStage("train", student, cfg.train, data)


def test_full_batches_go_to_the_graphed_loss_and_the_last_smaller_one_runs_eagerly(
        tmp_path, monkeypatch):
    modes, marks = [], []

    def fake_compile(fn, mode=None, **kw):  # records the mode; the CPU has no graphs
        modes.append(mode)
        return Counted(fn)

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin",
                        lambda: marks.append(1))
    student, data, stage = _stage(100, 32)
    trainer = Trainer(tmp_path, data, student, verbose=False,
                      perf=Perf(torch.device("cpu"), compile=True, cuda_graphs=True))
    trainer.attach(stage)
    # the whole loss is compiled (teacher, forward, loss), in reduce-overhead mode
    assert modes == ["reduce-overhead"] and stage.graphs
    assert stage.compiled_loss.fn == stage.loss and stage.net is student  # one process
    eager = Counted(stage.loss)
    monkeypatch.setattr(stage, "loss", eager)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    trainer.train_epoch(stage, opt, trainer.perf.scaler(), 1)
    assert stage.compiled_loss.sizes == [32, 32, 32] and eager.sizes == [4]  # 3 x 32 + 4
    assert len(marks) == 3  # a new step marked before each replay


def test_without_graphs_the_compiled_loss_takes_every_batch(tmp_path, monkeypatch):
    modes = []
    monkeypatch.setattr(torch, "compile",
                        lambda fn, mode=None, **kw: (modes.append(mode), Counted(fn))[1])
    student, data, stage = _stage(40, 16)
    trainer = Trainer(tmp_path, data, student, verbose=False,
                      perf=Perf(torch.device("cpu"), compile=True))
    trainer.attach(stage)
    assert modes == [None] and not stage.graphs
    trainer.train_epoch(stage, torch.optim.SGD(student.parameters(), lr=0.1),
                        trainer.perf.scaler(), 1)
    assert stage.compiled_loss.sizes == [16, 16, 8]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run by "
                    "benchmarks/gpu_check.sh on a GPU)")
@pytest.mark.parametrize("method", ["fitnet", "kd", "backprop"])
def test_a_graphed_run_trains_as_the_eager_one(tiny_mnist, tmp_path, method):
    base = ["device=cuda", "data.name=mnist", "data.download=false", "data.val_size=20",
            "data.batch_size=20", "data.train_limit=150", "perf.precision=fp32",
            "train.optim.name=adam", "hints.stage.optim.name=adam", "hints.stage.epochs=1",
            "train.epochs=2", f"data.root={tiny_mnist}"]
    teacher = tmp_path / "teacher"
    run(make_config(None, [*base, "model.name=mnist_teacher"]), "train", teacher,
        verbose=False)
    records = {}
    for graphs in ("false", "true"):
        out = tmp_path / f"graphs-{graphs}"
        run(make_config(None, [*base, f"method={method}", f"teacher.weights={teacher}",
                               "perf.compile=true", f"perf.cuda_graphs={graphs}"]),
            "distill", out, verbose=False)
        records[graphs] = [json.loads(x) for x in (out / "metrics.jsonl").read_text()
                           .splitlines()]
    for a, b in zip(records["false"], records["true"], strict=True):
        for key in ("train_loss", "val_hint_loss", "val_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-5), (a["stage"], key)
