"""perf.compile=true for every stage kind: hint stages (inner layers read by compilable
readers, distill/taps.py), KD, joint and back-propagation give the same losses and
accuracies as eager, on the CPU (torch.compile's inductor runs there), and each stage's
``loss(batch)`` compiles whole, without a graph break."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("sklearn")

from fitnets.config import make_config  # noqa: E402
from fitnets.run import run  # noqa: E402

BASE = {
    "device": "cpu", "seed": 0,
    "data": {"name": "digits", "val_size": 200, "batch_size": 64, "train_limit": 800,
             "preprocess": "scale"},
    "model": {"name": "digits_teacher"}, "teacher": {"name": "digits_teacher"},
    "student": {"name": "digits_student"},
    # max-norm limits that bind (conv3 reaches 0.2, conv6 0.19): compiled runs compile it too
    "train": {"epochs": 2, "optim": {"name": "adam", "lr": 0.003,
                                     "max_norm": {"*weight": 0.2}}},
    # Adam's eps at 1e-3 in the hint stage: at 1e-8 Adam turns gradients that are rounding
    # noise into full lr-sized steps, and eager and compiled fp32 kernels round differently
    # on AVX2 CPUs (not on AVX-512 ones): there the hint stage's losses parted by 0.1-1.8%
    # after its 10 steps (2026-12-07, a failed CI run); with 1e-3 they agree to 1e-7
    "hints": {"stage": {"epochs": 1, "optim": {"name": "adam", "lr": 0.01, "eps": 1e-3,
                                               "max_norm": {"*weight": 0.2}}}},
    "kd": {"lambda_start": 1, "lambda_saturate": 3},
    # fp32: the comparison is of the compiler, not of bf16 rounding in two kernel orders
    "perf": {"precision": "fp32"},
}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("compile") / "teacher"
    run(make_config(None, ["train.epochs=3"], base=BASE), "train", out, verbose=False)
    return out


def _records(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.compile
@pytest.mark.parametrize("method", ["fitnet", "joint", "backprop"])
def test_compiled_stages_match_eager(method, teacher, tmp_path):
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    # fitnet runs its teacher inside the compiled loss; joint reads the teacher cache
    cache = "off" if method == "fitnet" else "auto"
    over = [f"method={method}", f"teacher.weights={teacher}", f"perf.teacher_cache={cache}"]
    if method == "fitnet":  # 640 training rows, 10 full batches: no recompile for a last,
        # smaller batch in either stage (joint and backprop keep one: 600 rows). Cold, on 2
        # CPU cores, the fitnet case took 65 s with it and 55 s without (2026-12-06).
        over.append("data.train_limit=840")
    results = {}
    for compiled in (False, True):
        out = tmp_path / f"compile-{compiled}"
        cfg = make_config(None, over + [f"perf.compile={str(compiled).lower()}"], base=BASE)
        results[compiled] = (run(cfg, "distill", out, verbose=False), _records(out))
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs >= 1  # the compiled run did compile
    # each stage's loss (teacher, student, regressors, loss) compiles without a break
    assert not torch._dynamo.utils.counters["graph_break"], \
        dict(torch._dynamo.utils.counters["graph_break"])
    (eager, e_rec), (comp, c_rec) = results[False], results[True]
    assert [(r["stage"], r["epoch"]) for r in e_rec] == [(r["stage"], r["epoch"]) for r in c_rec]
    stages = {r["stage"] for r in c_rec}
    assert stages == {"fitnet": {"hints", "kd"}, "joint": {"joint"},
                      "backprop": {"backprop"}}[method]
    for a, b in zip(e_rec, c_rec):
        for key in ("train_loss", "val_hint_loss", "val_loss", "ce", "hint"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["stage"], key)
        for key in ("val_acc", "test_acc"):
            if key in a:
                assert abs(b[key] - a[key]) <= 0.01, (a["stage"], key)
    assert abs(comp["test_acc"] - eager["test_acc"]) <= 0.01
