"""How fast the fast CIFAR-10 teacher (cifar_fast_teacher, recipes/cifar10-teacher-fast.yaml)
trains on this machine, and how near that is to what the machine can do.

    python benchmarks/fast_teacher.py [--device cpu|cuda] [--batch 1024] [--steps 4]
        [--repeats 3] [--images 45000] [--epochs 10]

Measured in one process, interleaved (one of each per repeat, the median kept), so that a
slow spell of a shared machine falls on every figure:

matmul:   a 2048x2048 matmul in the run's precision (bf16 where perf.precision=auto picks it,
          as on CPUs with AVX-512 BF16 and on GPUs): the machine's dense-arithmetic rate.
bare:     the recipe's step with nothing else: forward under autocast, label-smoothed
          cross-entropy, backward, Nesterov SGD (channels_last as the run), on one batch.
loop:     the project's own loop (Trainer.train_epoch on the recipe's stage: its augmentation
          with alternating flips, triangle schedule and lookahead) over steps x batch images.

FLOPs per image (torch.utils.flop_counter, the step's forward and backward, matmuls and
convolutions only) turn img/s into FLOP/s: a step's fraction of the matmul rate says how much
of the machine it uses. Also an estimate of the full recipe's time (``--epochs`` over
``--images``, training only). Data are random normal images (speed only; the whitening is
computed from them). Writes benchmarks/results/fast-teacher-<device>.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from fitnets.config import make_config
from fitnets.data.augment import augment_with_flips
from fitnets.data.memory import Arrays, Data
from fitnets.distill.methods import Setup, backprop
from fitnets.models import build_model, data_init
from fitnets.optim import make_lookahead, make_optimizer, make_schedule
from fitnets.perf import resolve_perf
from fitnets.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import hardware, sync  # noqa: E402

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "cifar10-teacher-fast.yaml"
RESULTS = Path(__file__).resolve().parent / "results"


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int = 2048) -> float:
    """FLOP/s of one n x n matmul (2 n^3 FLOPs), the median of a few."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    times = []
    for _ in range(3):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times)


def flops_per_image(model, x, y, perf) -> tuple[float, float]:
    """(training step, forward) FLOPs per image, counted on one batch."""
    with FlopCounterMode(display=False) as count:
        with perf.autocast():
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
    step = count.get_total_flops()
    with FlopCounterMode(display=False) as count, torch.no_grad(), perf.autocast():
        model(x)
    model.zero_grad(set_to_none=True)
    return step / len(x), count.get_total_flops() / len(x)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=None, help="images per step (the recipe's)")
    ap.add_argument("--steps", type=int, default=4, help="steps per timed loop epoch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=45_000, help="for the estimate: 45k, 5k val")
    ap.add_argument("--epochs", type=int, default=10, help="for the estimate")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON file")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    cfg = make_config(RECIPE, [f"device={a.device}"])
    a.batch = a.batch or cfg.data.batch_size
    perf = resolve_perf(cfg.perf, device)
    torch.manual_seed(0)
    n = a.steps * a.batch
    x = perf.layout(torch.randn(n, 3, 32, 32, device=device))
    y = torch.randint(0, 10, (n,), device=device)
    data = Data(Arrays(x, y), None, Arrays(x[:a.batch], y[:a.batch]), a.batch, 512)
    model = perf.prepare(build_model("cifar_fast_teacher").to(device))
    data_init(model, data)
    per_step, per_fwd = flops_per_image(model, x[:a.batch], y[:a.batch], perf)

    # bare: the step alone, on one batch
    bare_opt = make_optimizer([{"params": [p for p in model.parameters() if p.requires_grad]}],
                              cfg.train.optim)
    xb, yb = x[:a.batch], y[:a.batch]

    def bare():
        for _ in range(a.steps):
            with perf.autocast():
                loss = F.cross_entropy(model(xb).float(), yb, label_smoothing=0.2)
            bare_opt.zero_grad(set_to_none=True)
            loss.backward()
            bare_opt.step()

    # loop: the project's epoch on the recipe's stage (its augmentation, schedule, lookahead)
    data.augment = lambda v, g: augment_with_flips(v, g, pad=cfg.data.augment_pad,
                                                   fill=cfg.data.augment_pad_mode)
    data.alternate_flips = cfg.data.augment_flip == "alternate"
    stage = backprop.stages(Setup(cfg, model, None, data, (3, 32, 32)), name="train")[0].build()
    tmp = tempfile.TemporaryDirectory()
    trainer = Trainer(Path(tmp.name), data, model, perf=perf, verbose=False)
    trainer.attach(stage)
    opt = make_optimizer(stage.param_groups, cfg.train.optim)
    total = cfg.train.epochs * a.steps  # as Trainer.fit sets them up
    trainer.per_step = [make_schedule(opt, cfg.train.optim, cfg.train.epochs, a.steps),
                        make_lookahead(model, cfg.train.optim, total)]
    scaler = perf.scaler()
    epoch = [0]

    def loop():
        epoch[0] += 1
        trainer.train_epoch(stage, opt, scaler, epoch[0])

    bare(), loop()  # warm-up
    times: dict[str, list[float]] = {"matmul": [], "bare": [], "loop": []}
    for _ in range(a.repeats):
        times["matmul"].append(matmul_rate(device, perf.dtype))
        for name, fn in (("bare", bare), ("loop", loop)):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    peak = statistics.median(times["matmul"])
    out = {"hardware": hardware(device), "device": str(device), "precision": perf.precision,
           "channels_last": perf.channels_last, "batch": a.batch, "steps": a.steps,
           "repeats": a.repeats, "gflop_per_image_step": per_step / 1e9,
           "gflop_per_image_forward": per_fwd / 1e9, "matmul_gflops": peak / 1e9}
    for name in ("bare", "loop"):
        rate = n / statistics.median(times[name])
        out[f"{name}_img_s"] = rate
        out[f"{name}_fraction_of_matmul"] = rate * per_step / peak
    out["estimated_train_minutes"] = a.epochs * a.images / out["loop_img_s"] / 60
    print(f"{out['hardware']}\n{perf.precision}, channels_last {perf.channels_last}, batch "
          f"{a.batch}: {per_step / 1e9:.3f} GFLOP/image a step ({per_fwd / 1e9:.3f} forward)")
    print(f"matmul 2048^2 {perf.precision}: {peak / 1e9:,.0f} GFLOP/s")
    for name in ("bare", "loop"):
        print(f"{name:5s} {out[name + '_img_s']:8,.0f} img/s = "
              f"{100 * out[name + '_fraction_of_matmul']:.0f}% of the matmul rate")
    print(f"estimate: {a.epochs} epochs of {a.images:,} images ~ "
          f"{out['estimated_train_minutes']:.1f} min of training (evaluation not included)")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"fast-teacher-{device.type}.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
