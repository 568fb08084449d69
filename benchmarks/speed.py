"""Images/second of a stage-1, stage-2 and back-propagation step, measured three ways.

    python benchmarks/speed.py [--pair mnist|cifar10-fitnet1] [--device cpu|cuda] [--steps N]
        [--batch B] [--set perf.compile=true]

With ``--set perf.compile=true`` both the fitnets and the floor steps compile the same
work (the step's loss whole: teacher, student and loss; inner layers read by compilable
readers; the max-norm constraint), so the ratio still measures the loop; on a GPU that also
replays the step's forward and backward as CUDA graphs (perf.cuda_graphs=auto), and
``--set perf.compile=true perf.cuda_graphs=false`` gives compiled without graphs.

fitnets: the project's own loop (``Trainer.train_epoch`` on a stage its methods build,
          batched device-side augmentation, losses, logging), default speed switches.
floor:    the same models, precision, layout, batch size and work without the loop's
          bookkeeping: a shuffled batch taken from memory, the same batched augmentation
          (fitnets.data.augment), forward, backward, optimiser step and the same max-norm
          constraints (the paper recipes' limits, on both sides), teacher included where
          the step needs it; no loss sums, finiteness flags, progress bar or logging.
usual:    per-image PIL transforms (random crop with padding, flip, to-tensor, normalise) in
          a DataLoader with 2 worker processes, fp32, contiguous, teacher recomputed per step.

Also: a stage-2 epoch without augmentation with the teacher cache vs recomputing the teacher.
The fitnets and floor epochs (and the two cache variants) are timed in turn, one of each per
repeat, so that a slow spell of a shared machine falls on both sides of a ratio.
Data are synthetic uint8 images of the pair's shape. Writes
benchmarks/results/speed-<pair>-<device>.json and rewrites benchmarks/results/SPEED.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fitnets.config import make_config
from fitnets.data.memory import Arrays, Data
from fitnets.distill.hint import HintModule, HintStage, hint_loss
from fitnets.distill.losses import kd_loss
from fitnets.distill.methods import Setup, backprop, kd
from fitnets.distill.taps import compile_taps, prepare_taps, run_to, run_with
from fitnets.distill.teacher import LOGITS, Teacher
from fitnets.models import build_model
from fitnets.optim import make_optimizer, max_norm_fn
from fitnets.perf import resolve_perf
from fitnets.trainer import Trainer

PAIRS = {  # max_norm: the limits of recipes/mnist-fitnet.yaml and cifar10-fitnet1.yaml
    "mnist": dict(teacher="mnist_teacher", student="mnist_student", shape=(1, 28, 28),
                  pad=2, flip=False, images=512,
                  max_norm={"conv[12].*weight": 0.9, "conv[3-6].*weight": 1.9365,
                            "classifier.weight": 1.9365, "regressor.*weight": 0.9}),
    "cifar10-fitnet1": dict(teacher="cifar_teacher", student="fitnet1", shape=(3, 32, 32),
                            pad=4, flip=True, images=256,
                            max_norm={"conv*weight": 0.9, "fc*weight": 1.9,
                                      "classifier.weight": 1.9365, "regressor.*weight": 0.9}),
}
RESULTS = Path(__file__).resolve().parent / "results"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def models(pair: dict, device: torch.device, perf=None):
    torch.manual_seed(0)
    teacher = build_model(pair["teacher"], in_channels=pair["shape"][0]).to(device).eval()
    teacher.requires_grad_(False)
    student = build_model(pair["student"], in_channels=pair["shape"][0]).to(device)
    if perf is not None:
        perf.prepare(teacher)
        perf.prepare(student)
    return teacher, student


def synthetic(pair: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    c, h, w = pair["shape"]
    return rng.integers(0, 256, (n, h, w, c), dtype=np.uint8), rng.integers(0, 10, n)


# --------------------------------------------------------------------------- (1) fitnets


BATCH = 128  # images per optimiser step (--batch)


def fitnets_data(pair, xs, ys, device, perf, augment=True) -> Data:
    from fitnets.data.augment import augment_with_flips

    x = torch.from_numpy(xs).permute(0, 3, 1, 2).float().div(255).to(device)
    arrays = Arrays(perf.layout(x), torch.from_numpy(ys).long().to(device))
    aug = None
    if augment:
        def aug(v, g):
            return augment_with_flips(v, g, pad=pair["pad"], flip=pair["flip"])
    return Data(arrays, None, arrays, BATCH, 512, aug)


def make_stage(kind, cfg, teacher, student, data, pair):
    setup = Setup(cfg, student, teacher, data, pair["shape"])
    if kind == "stage1":
        pair_ = (student.default_guided, teacher.net.default_hint)
        return HintStage(cfg, student, teacher, pair_, 0, data, pair["shape"])
    if kind == "stage2":
        return kd.KDStage(setup)
    return backprop.stages(setup)[0].build()


def fitnets_epoch(kind, pair, xs, ys, device, perf, augment=True, cache=False):
    """One epoch of the project's loop, ready to time (warmed up), and the seconds the
    teacher cache took to build."""
    limits = json.dumps(pair["max_norm"])  # YAML reads JSON
    cfg = make_config(None, ["device=cpu", "train.optim.name=rmsprop", "train.optim.lr=0.00001",
                             "hints.stage.optim.lr=0.00001", f"train.optim.max_norm={limits}",
                             f"hints.stage.optim.max_norm={limits}",
                             "perf.teacher_cache=" + ("memory" if cache else "'off'")])
    net, student = models(pair, device, perf)
    if perf.compile:  # as run.py sets a compiled run up
        compile_taps(student)
        compile_taps(net)
        net.compile()
    data = fitnets_data(pair, xs, ys, device, perf, augment)
    teacher = Teacher(net, cfg, perf, data.train.x, 512)
    build_s = 0.0
    if cache:
        t0 = time.perf_counter()
        teacher.prepare([LOGITS] if kind == "stage2" else [net.default_hint])
        sync(device)
        build_s = time.perf_counter() - t0
    stage = make_stage(kind, cfg, teacher, student, data, pair)
    # warm-up: full batches and the last partial one (each shape compiles once)
    rows = 2 * BATCH + len(xs) % BATCH
    warm = Data(Arrays(data.train.x[:rows], data.train.y[:rows]), None, data.test, BATCH,
                512, data.augment)
    return ready_epoch(stage, data, warm, student, perf), build_s


def ready_epoch(stage, data, warm, student, perf):
    """A function running one training epoch of ``stage`` on ``data`` through the project's
    Trainer (layout, and the step compiled and graphed, as Trainer.fit does), after one
    warm-up epoch on ``warm`` (each batch shape compiles once). Shared by the LM speed
    benchmark (lm_speed.py)."""
    tmp = tempfile.TemporaryDirectory()
    Trainer(Path(tmp.name), data, student, perf=perf, verbose=False).attach(stage)
    opt = make_optimizer(stage.param_groups, stage.cfg.optim)
    stage.start_epoch(1)
    scaler = perf.scaler()
    Trainer(Path(tmp.name), warm, student, perf=perf, verbose=False).train_epoch(
        stage, opt, scaler, 1)
    trainer = Trainer(Path(tmp.name), data, student, perf=perf, verbose=False)

    def epoch():
        trainer.train_epoch(stage, opt, scaler, 1)

    epoch.directory = tmp  # removed when the epoch function goes
    return epoch


def timed(epochs: dict, repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds of each epoch function, ``repeats`` times, interleaved (one of each in turn),
    so that a slow spell of a shared machine falls on all of them and not on one."""
    times = {name: [] for name in epochs}
    for _ in range(repeats):
        for name, epoch in epochs.items():
            sync(device)
            t0 = time.perf_counter()
            epoch()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def rate(n: int, times: list[float]) -> float:
    """Images/second of the median epoch."""
    return n / statistics.median(times)


# --------------------------------------------------------------------------- (2) floor


def step_fn(kind, teacher, student, perf, max_norm=None):
    """One training step on a ready batch: what every pipeline must at least compute
    (``max_norm``: the pair's limits, applied after the step as the recipes do)."""
    hint = teacher.default_hint
    if kind == "stage1":
        from fitnets.distill.regressor import build_regressor, hint_nonlinearity
        from fitnets.distill.taps import get_layer, layer_shapes

        in_shape = tuple(student.input_shape)
        g = layer_shapes(student, in_shape)[student.default_guided]
        h = layer_shapes(teacher, in_shape)[hint]
        reg = build_regressor(g, h, "auto", hint_nonlinearity(get_layer(teacher, hint)))
        module = HintModule(student, reg.to(next(student.parameters()).device),
                            student.default_guided)
        if perf is not None:
            perf.prepare(module)
    else:
        module = student
    constrain = max_norm_fn(module, max_norm or {},
                            prefix="student." if kind == "stage1" else "")
    opt = torch.optim.RMSprop(module.parameters(), lr=1e-5)
    graphs = perf is not None and perf.cuda_graphs

    def loss_of(x, y, full_teacher=False):
        if kind == "stage1":
            with torch.no_grad():
                if full_teacher:
                    _, (target,) = run_with(teacher, x, [hint])
                else:
                    (target,) = run_to(teacher, x, [hint])
            return hint_loss(module(x), target)
        if kind == "stage2":
            with torch.no_grad():
                t = teacher(x)
            return kd_loss(module(x), t, y, lam=4.0, tau=3.0)[0]
        return F.cross_entropy(module(x).float(), y)

    compiled = loss_of
    if perf is not None and perf.compile:  # compiled as fitnets' step is (Trainer.attach)
        compile_taps(student)
        compile_taps(teacher)
        if kind == "stage1":  # readers registered before tracing, as HintStage does
            prepare_taps(student, [student.default_guided])
            prepare_taps(teacher, [hint])
        teacher.compile()
        compiled = torch.compile(loss_of, mode="reduce-overhead" if graphs else None)
        if constrain.targets:
            constrain = torch.compile(constrain)

    def step(x, y, full_teacher=False):
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with perf.autocast() if perf is not None else torch.autocast("cpu", enabled=False):
            loss = (loss_of if full_teacher else compiled)(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        constrain()

    return step


def floor_epoch(kind, pair, xs, ys, device, perf, augment=True):
    """One epoch of the floor's steps (module docstring), ready to time (warmed up)."""
    from fitnets.data.augment import augment_with_flips

    teacher, student = models(pair, device, perf)
    step = step_fn(kind, teacher, student, perf, pair["max_norm"])
    x = perf.layout(torch.from_numpy(xs).permute(0, 3, 1, 2).float().div(255).to(device))
    y = torch.from_numpy(ys).long().to(device)
    g = torch.Generator(device).manual_seed(0)

    def epoch(limit=None):
        order = torch.randperm(len(y), device=device, generator=g)
        for i in range(0, len(y), BATCH)[:limit]:
            idx = order[i:i + BATCH]
            xb = x[idx]
            if augment:
                xb, _ = augment_with_flips(xb, g, pad=pair["pad"], flip=pair["flip"])
            step(perf.layout(xb), y[idx])

    epoch(limit=2)  # warm-up
    step(perf.layout(x[-(len(y) % BATCH or BATCH):]), y[-(len(y) % BATCH or BATCH):])
    return epoch


# --------------------------------------------------------------------------- (3) usual


class PilDataset(torch.utils.data.Dataset):
    """torchvision-style: one PIL image at a time, RandomCrop(pad) + flip + ToTensor + norm."""

    def __init__(self, xs, ys, pad, flip):
        self.xs, self.ys, self.pad, self.flip = xs, ys, pad, flip
        self.mean, self.std = 0.5, 0.25

    def __len__(self):
        return len(self.ys)

    def __getitem__(self, i):
        from PIL import Image, ImageOps

        a = self.xs[i]
        img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
        w, h = img.size
        rng = np.random.default_rng()
        if self.pad:
            img = ImageOps.expand(img, border=self.pad, fill=0)
            top, left = rng.integers(0, 2 * self.pad + 1, 2)
            img = img.crop((left, top, left + w, top + h))
        if self.flip and rng.random() < 0.5:
            img = ImageOps.mirror(img)
        t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
        t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
        return (t - self.mean) / self.std, int(self.ys[i])


def time_usual(kind, pair, xs, ys, device, repeats):
    teacher, student = models(pair, device)
    step = step_fn(kind, teacher, student, None)
    loader = torch.utils.data.DataLoader(PilDataset(xs, ys, pair["pad"], pair["flip"]),
                                         batch_size=BATCH, shuffle=True, num_workers=2,
                                         persistent_workers=True,
                                         pin_memory=device.type == "cuda")
    for xb, yb in loader:  # warm-up: workers started, kernels chosen
        step(xb.to(device), yb.to(device), full_teacher=True)
        break
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for xb, yb in loader:
            step(xb.to(device, non_blocking=True), yb.to(device, non_blocking=True),
                 full_teacher=True)
        sync(device)
        times.append(time.perf_counter() - t0)
    return len(xs) / statistics.median(times), times


# --------------------------------------------------------------------------- report


def hardware(device: torch.device) -> str:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    text = (f"CPU {cpu}, {os.cpu_count()} cores visible, {_simd()}, torch "
            f"{torch.__version__} ({torch.get_num_threads()} threads)")
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


def _simd() -> str:
    """The CPU's widest vector units that matter for these kernels (bf16 or not)."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "vector units unknown"
    if "avx512_bf16" in flags:
        return "AVX-512 with BF16"
    return "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")


def write_markdown() -> None:
    lines = ["# Speed: images/second (median of the repeats)", "",
             "Written by `benchmarks/speed.py`; each row is one run of the command shown.",
             "fitnets: the project's loop. floor: the same models and work (shuffled batch, "
             "the same batched augmentation, forward, backward, optimiser step, the recipes' "
             "max-norm limits) without the loop's bookkeeping. usual: per-image PIL "
             "transforms in a 2-worker DataLoader, fp32. fitnets and floor epochs are timed "
             "in turn (one of each per repeat), so a ratio is measured in one run.", ""]
    for path in sorted(RESULTS.glob("speed-*.json")):
        r = json.loads(path.read_text())
        lines += [f"## {r['pair']} on {r['device']}", "", f"Command: `{r['command']}`  ",
                  f"Hardware: {r['hardware']}  ", f"Switches: {r['perf']}; "
                  f"{r['images']} images per epoch, batch {r.get('batch', 128)}, "
                  f"{r['repeats']} repeats", "",
                  "| step | fitnets | floor | usual | fitnets/floor | fitnets/usual "
                  "| slowest/fastest repeat (fitnets, floor, usual) |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for kind, v in r["steps"].items():
            spread = ", ".join(f"{max(t) / min(t):.2f}" for t in v["epoch_s"].values())
            lines.append(f"| {kind} | {v['fitnets']:.1f} | {v['floor']:.1f} | {v['usual']:.1f} "
                         f"| {v['fitnets/floor']:.2f} | {v['fitnets/usual']:.2f} | {spread} |")
        c = r.get("teacher_cache")
        if c is None:
            lines.append("")  # a blank line before the next section's heading
            continue
        lines += ["", f"Stage-2 epoch without augmentation: {c['recompute']:.1f} img/s "
                  f"recomputing the teacher, {c['cached']:.1f} img/s with the teacher cache "
                  f"(x{c['speedup']:.2f}; building the cache took {c['build_s']:.1f} s, "
                  "once per run or once ever with the disk cache).", ""]
    (RESULTS / "SPEED.md").write_text("\n".join(lines))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", choices=sorted(PAIRS), default="mnist")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=None,
                    help="optimiser steps (batches of --batch) per timed epoch")
    ap.add_argument("--batch", type=int, default=128, help="images per optimiser step")
    ap.add_argument("--repeats", type=int, default=3, help="timed epochs; the median is kept")
    ap.add_argument("--only", default="stage1,stage2,backprop,cache")
    ap.add_argument("--set", nargs="*", default=[], metavar="perf.KEY=VALUE",
                    help="speed switches other than the defaults, e.g. perf.precision=fp32")
    args = ap.parse_args(argv)
    global BATCH
    BATCH = args.batch
    device = torch.device(args.device)
    pair = PAIRS[args.pair]
    n = BATCH * args.steps if args.steps else pair["images"]
    xs, ys = synthetic(pair, n)
    perf = resolve_perf(make_config(None, args.set).perf, device)
    print(f"{args.pair} on {device}: {hardware(device)}; {perf.describe()}; {n} images",
          flush=True)
    result = {"pair": args.pair, "device": device.type, "images": n, "repeats": args.repeats,
              "batch": BATCH,
              "hardware": hardware(device), "perf": perf.describe(),
              "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:]), "steps": {}}
    only = args.only.split(",")
    for kind in ("stage1", "stage2", "backprop"):
        if kind not in only:
            continue
        mine, _ = fitnets_epoch(kind, pair, xs, ys, device, perf)
        epochs = timed({"fitnets": mine,
                        "floor": floor_epoch(kind, pair, xs, ys, device, perf)},
                       args.repeats, device)
        a, b = rate(n, epochs["fitnets"]), rate(n, epochs["floor"])
        c, tc = time_usual(kind, pair, xs, ys, device, args.repeats)
        result["steps"][kind] = {"fitnets": a, "floor": b, "usual": c, "fitnets/floor": a / b,
                                 "fitnets/usual": a / c, "epoch_s": {**epochs, "usual": tc}}
        print(f"{kind:9s} fitnets {a:8.1f} img/s  floor {b:8.1f}  usual {c:8.1f}  "
              f"fitnets/floor {a / b:.2f}  fitnets/usual {a / c:.2f}", flush=True)
    if "cache" in only:
        recompute, _ = fitnets_epoch("stage2", pair, xs, ys, device, perf, augment=False)
        cached, build = fitnets_epoch("stage2", pair, xs, ys, device, perf, augment=False,
                                      cache=True)
        epochs = timed({"recompute": recompute, "cached": cached}, args.repeats, device)
        rec, cac = rate(n, epochs["recompute"]), rate(n, epochs["cached"])
        result["teacher_cache"] = {"recompute": rec, "cached": cac, "speedup": cac / rec,
                                   "build_s": build}
        print(f"stage-2 epoch, no augmentation: recompute {rec:.1f} img/s, cached {cac:.1f} "
              f"img/s (x{cac / rec:.2f}); cache built in {build:.1f} s", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = "".join(f"-{o.split('.')[-1].replace('=', '_')}" for o in args.set) + (
        f"-batch{BATCH}" if BATCH != 128 else "")
    out = RESULTS / f"speed-{args.pair}-{device.type}{tag}.json"
    out.write_text(json.dumps(result, indent=2))
    write_markdown()
    print(f"wrote {out} and {RESULTS / 'SPEED.md'}")


if __name__ == "__main__":
    main()
