"""Tokens/second of the language model's stage-1, stage-2 and back-propagation steps: the
project's loop against an eager floor (issue 33's goal: the loop at least 0.95x the floor).

    python benchmarks/lm_speed.py [--device cpu|cuda] [--blocks N] [--repeats R]
        [--only stage1,stage2,backprop,cache] [--set perf.KEY=VALUE ...] [--out DIR]

The models are the standard-library recipes' (recipes/text-gpt-teacher.yaml and
recipes/text-gpt-fitnet.yaml): a GPT teacher of width 256, 4 blocks, 4 heads and a student of
width 128, 8 blocks, 4 heads over byte-level ids (vocabulary 257), on ``--blocks`` synthetic
blocks of 128 ids (fixed seed), batch 32, Adam (the recipe's lr), default speed switches.

stage1:   the hint stage: the student up to blocks.3 through the per-token linear regressor
          (hints.regressor=token) against the teacher's blocks.1, the teacher run inline to it.
stage2:   KD at every position (tau 2, lambda 4) on the whole student, the teacher inline.
backprop: the student on the next-token labels alone.

fitnets: the project's own loop (``Trainer.train_epoch`` on the stage its methods build, the
         data a ``TextData`` in memory, perf.teacher_cache=off), as benchmarks/speed.py's
         fitnets epoch.
floor:   the same models, precision, batch and optimiser (torch's Adam, fused on a GPU as
         fitnets.optim asks for it) in a bare eager loop: a shuffled batch taken from
         memory, forward, the same loss (the same regressor, hint loss and reduction; for
         stage 2 fitnets.distill.losses.kd_loss on the logits flattened to (B*T, V)),
         backward, optimiser step; no loss sums, finiteness flags, progress bar or logging.
cache:   (--only cache) a stage-2 epoch of the project's loop reading the teacher's logits
         from the bank (perf.teacher_cache=memory) against running the teacher inline.

The epochs compared are timed in turn, one of each per repeat, the median kept, so that a slow
spell of a shared machine falls on both sides of a ratio. Also measured in the same process:
the matmul rate (GFLOP/s of a 2048x2048 matmul, --matmul) in the run's precision (bf16 where
perf.precision=auto picks it), the median of one sample per part. Writes
DIR/lm-speed-<device>.json and rewrites DIR/lm-speed.md (DIR: benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fitnets.config import make_config
from fitnets.data.memory import Arrays
from fitnets.data.text import ByteTokenizer, TextData
from fitnets.distill.hint import (
    HintModule,
    HintStage,
    hint_loss,
    hint_reduction,
    hint_target,
    regressor_for,
)
from fitnets.distill.losses import kd_loss
from fitnets.distill.methods import Setup, backprop, kd
from fitnets.distill.taps import run_to
from fitnets.distill.teacher import LOGITS, Teacher
from fitnets.models import build_model
from fitnets.perf import resolve_perf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fast_teacher import matmul_rate  # noqa: E402
from speed import hardware, rate, ready_epoch, sync, timed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "text-gpt-fitnet.yaml"  # teacher and student sizes, pair, kd, optim
RESULTS = Path(__file__).resolve().parent / "results"
BLOCK = 128  # tokens a block (the recipes' data.block_size)
VOCAB = ByteTokenizer.vocab_size  # 257
KINDS = ("stage1", "stage2", "backprop")


def config(overrides: list[str], cache: bool = False):
    """The fitnet recipe's config: lambda 4 in epoch 1 (lambda_start 2), the teacher bank
    off (or in memory), ``overrides`` (--set) last."""
    return make_config(RECIPE, ["device=cpu", "kd.lambda_start=2",
                                "perf.teacher_cache=" + ("memory" if cache else "'off'"),
                                *overrides])


def synthetic(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` blocks of BLOCK + 1 byte-level ids (fixed seed): (inputs, next-token ids), int64
    (n, BLOCK), views of one tensor as fitnets.data.prepare makes them."""
    rng = np.random.default_rng(0)
    b = torch.from_numpy(rng.integers(0, VOCAB, (n, BLOCK + 1), dtype=np.int64)).to(device)
    return b[:, :-1], b[:, 1:]


def models(cfg, device: torch.device, perf):
    """The recipe's teacher (frozen, eval mode) and a fresh student, seeded."""
    torch.manual_seed(0)
    sizes = {"context": BLOCK}
    teacher = build_model(cfg.teacher.name, num_classes=VOCAB, key="teacher",
                          sizes={**sizes, "width": cfg.teacher.width,
                                 "depth": cfg.teacher.depth, "heads": cfg.teacher.heads})
    student = build_model(cfg.student.name, num_classes=VOCAB, key="student",
                          sizes={**sizes, "width": cfg.student.width,
                                 "depth": cfg.student.depth, "heads": cfg.student.heads})
    teacher = perf.prepare(teacher.to(device)).eval().requires_grad_(False)
    return teacher, perf.prepare(student.to(device))


def text_data(x: torch.Tensor, y: torch.Tensor, batch: int) -> TextData:
    return TextData(Arrays(x, y), None, Arrays(x[:batch], y[:batch]), batch, 64)


# --------------------------------------------------------------------------- (1) fitnets


def fitnets_epoch(kind, cfg, x, y, device, perf):
    """One epoch of the project's loop on ``kind``'s stage, ready to time (warmed up), and the
    seconds the teacher bank took to build (0 without one)."""
    batch = cfg.data.batch_size
    net, student = models(cfg, device, perf)
    data = text_data(x, y, batch)
    teacher = Teacher(net, cfg, perf, data.train.x, cfg.data.eval_batch_size)
    build_s = 0.0
    if cfg.perf.teacher_cache != "off" and kind == "stage2":
        sync(device)
        t0 = time.perf_counter()
        teacher.prepare([LOGITS])
        sync(device)
        build_s = time.perf_counter() - t0
    setup = Setup(cfg, student, teacher, data, (BLOCK,))
    pair = tuple(cfg.hints.pairs[0])
    if kind == "stage1":
        stage = HintStage(cfg, student, teacher, pair, 0, data, (BLOCK,))
    elif kind == "stage2":  # as the fitnet method builds it: after the hint stage
        stage = kd.KDStage(setup, guided=[pair[0]])
    else:
        stage = backprop.stages(setup)[0].build()
    rows = 2 * batch + len(y) % batch  # warm-up: full batches and the last partial one
    warm = text_data(x[:rows], y[:rows], batch)
    return ready_epoch(stage, data, warm, student, perf), build_s


# --------------------------------------------------------------------------- (2) floor


def floor_epoch(kind, cfg, x, y, device, perf):
    """One epoch of the bare eager loop (module docstring), ready to time (warmed up)."""
    batch = cfg.data.batch_size
    teacher, student = models(cfg, device, perf)
    pair = tuple(cfg.hints.pairs[0])
    guided, hint = pair
    if kind == "stage1":  # the same regressor (kind, initialisation) the hint stage builds
        reg, desc = regressor_for(cfg, student, teacher, pair, 0, (BLOCK,))
        module = perf.prepare(HintModule(student, reg, guided))
        reduction = hint_reduction(cfg, joint=False, kind=desc["regressor"])
        target = hint_target(reg)
        optim = cfg.hints.stage.optim
    else:
        module, optim = student, cfg.train.optim
    params = [p for p in module.parameters() if p.requires_grad]
    fused = {"fused": True} if device.type == "cuda" else {}  # as fitnets.optim asks for it
    opt = torch.optim.Adam(params, lr=optim.lr, eps=optim.eps,
                           weight_decay=optim.weight_decay, **fused)
    scaler = perf.scaler()  # a pass-through unless fp16
    k = cfg.kd

    def loss_of(xb, yb):
        if kind == "stage1":
            with torch.no_grad():
                (h,) = run_to(teacher, xb, [hint])
            return hint_loss(module(xb), target(h), reduction)
        logits = module(xb).flatten(0, 1)
        if kind == "stage2":
            with torch.no_grad():
                t = teacher(xb).flatten(0, 1)
            return kd_loss(logits, t, yb.flatten(), lam=k.lambda_init, tau=k.tau,
                           tau_squared=k.tau_squared, student_tau=k.student_tau)[0]
        return F.cross_entropy(logits.float(), yb.flatten())

    def step(xb, yb):
        with perf.autocast():
            loss = loss_of(xb, yb)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    g = torch.Generator(device).manual_seed(0)
    module.train()

    def epoch(limit=None):
        order = torch.randperm(len(y), device=device, generator=g)
        for i in range(0, len(y), batch)[:limit]:
            idx = order[i:i + batch]
            step(x[idx], y[idx])

    epoch(limit=2)  # warm-up, then the last partial batch's shape
    last = len(y) % batch or batch
    step(x[-last:], y[-last:])
    return epoch


# --------------------------------------------------------------------------- report


def write_markdown(folder: Path) -> Path:
    lines = ["# LM speed: tokens/second (median of the repeats)", "",
             "Written by `benchmarks/lm_speed.py`; each section is one run of the command "
             "shown. The standard-library recipes' GPTs (teacher 256 wide x 4 blocks, student "
             "128 x 8, 4 heads, byte-level ids, blocks of 128) on synthetic ids. fitnets: the "
             "project's loop (Trainer.train_epoch on the stage its methods build). floor: the "
             "same models, precision, batch, loss and Adam in a bare eager loop (shuffled "
             "batch from memory, forward, loss, backward, step). fitnets and floor epochs are "
             "timed in turn (one of each per repeat), so a ratio is measured in one run. "
             "Issue 33's goal: fitnets/floor >= 0.95 for every stage.", ""]
    for path in sorted(folder.glob("lm-speed-*.json")):
        r = json.loads(path.read_text())
        lines += [f"## {r['device']}", "", f"Command: `{r['command']}`  ",
                  f"Hardware: {r['hardware']}  ", f"torch {r['torch']}; switches: {r['perf']}; "
                  f"{r['blocks']} blocks of {r['block_size']} tokens per epoch, batch "
                  f"{r['batch']}, {r['repeats']} repeats  ",
                  f"Matmul rate ({r['matmul_dtype']}, {r['matmul_size']}x{r['matmul_size']}): "
                  f"{r['matmul_gflops']:,.0f} GFLOP/s", ""]
        if r["steps"]:
            lines += ["| step | fitnets tok/s | floor tok/s | fitnets/floor "
                      "| slowest/fastest repeat (fitnets, floor) |", "|---|---:|---:|---:|---|"]
            for kind, v in r["steps"].items():
                spread = ", ".join(f"{max(t) / min(t):.2f}" for t in v["epoch_s"].values())
                goal = "" if v["fitnets/floor"] >= 0.95 else " (below 0.95)"
                lines.append(f"| {kind} | {v['fitnets']:,.0f} | {v['floor']:,.0f} "
                             f"| {v['fitnets/floor']:.2f}{goal} | {spread} |")
            lines.append("")
        c = r.get("teacher_cache")
        if c is not None:
            lines += [f"Stage-2 epoch of the loop: {c['inline']:,.0f} tok/s running the "
                      f"teacher inline, {c['bank']:,.0f} tok/s reading the teacher bank "
                      f"(x{c['speedup']:.2f}; building the bank took {c['build_s']:.1f} s).",
                      ""]
    out = folder / "lm-speed.md"
    out.write_text("\n".join(lines))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--blocks", type=int, default=256,
                    help="synthetic blocks of 128 tokens per timed epoch")
    ap.add_argument("--repeats", type=int, default=3, help="timed epochs; the median is kept")
    ap.add_argument("--only", default="stage1,stage2,backprop,cache")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides, e.g. perf.precision=fp32 data.batch_size=64")
    ap.add_argument("--matmul", type=int, default=2048, metavar="N",
                    help="the side of the matmul whose rate is measured")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON and .md")
    args = ap.parse_args(argv)
    only = args.only.split(",")
    unknown = set(only) - {*KINDS, "cache"}
    if unknown:
        ap.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}")
    device = torch.device(args.device)
    cfg = config(args.set)
    perf = resolve_perf(cfg.perf, device)
    if perf.compile:
        ap.error("the floor is eager: leave perf.compile and perf.cuda_graphs at their "
                 "defaults (benchmarks/speed.py measures compiled steps)")
    x, y = synthetic(args.blocks, device)
    tokens = args.blocks * BLOCK
    matmul = [matmul_rate(device, perf.dtype, args.matmul)]
    print(f"LM speed on {device}: {hardware(device)}; {perf.describe()}; {args.blocks} blocks "
          f"of {BLOCK} tokens, batch {cfg.data.batch_size}", flush=True)
    result = {"device": device.type, "blocks": args.blocks, "block_size": BLOCK,
              "tokens": tokens, "batch": cfg.data.batch_size, "repeats": args.repeats,
              "hardware": hardware(device), "torch": torch.__version__,
              "perf": perf.describe(),
              "models": {"teacher": dict(width=cfg.teacher.width, depth=cfg.teacher.depth,
                                         heads=cfg.teacher.heads),
                         "student": dict(width=cfg.student.width, depth=cfg.student.depth,
                                         heads=cfg.student.heads),
                         "hint_pair": list(cfg.hints.pairs[0]),
                         "regressor": cfg.hints.regressor, "vocab": VOCAB},
              "command": "python benchmarks/lm_speed.py " + " ".join(
                  sys.argv[1:] if argv is None else argv),
              "steps": {}}
    for kind in KINDS:
        if kind not in only:
            continue
        mine, _ = fitnets_epoch(kind, cfg, x, y, device, perf)
        epochs = timed({"fitnets": mine, "floor": floor_epoch(kind, cfg, x, y, device, perf)},
                       args.repeats, device)
        a, b = rate(tokens, epochs["fitnets"]), rate(tokens, epochs["floor"])
        result["steps"][kind] = {"fitnets": a, "floor": b, "fitnets/floor": a / b,
                                 "epoch_s": epochs}
        matmul.append(matmul_rate(device, perf.dtype, args.matmul))
        print(f"{kind:9s} fitnets {a:10,.0f} tok/s  floor {b:10,.0f} tok/s  "
              f"fitnets/floor {a / b:.2f}", flush=True)
    if "cache" in only:
        inline, _ = fitnets_epoch("stage2", cfg, x, y, device, perf)
        bank, build_s = fitnets_epoch("stage2", config(args.set, cache=True), x, y, device,
                                      perf)
        epochs = timed({"inline": inline, "bank": bank}, args.repeats, device)
        a, b = rate(tokens, epochs["inline"]), rate(tokens, epochs["bank"])
        result["teacher_cache"] = {"inline": a, "bank": b, "speedup": b / a,
                                   "build_s": build_s, "epoch_s": epochs}
        matmul.append(matmul_rate(device, perf.dtype, args.matmul))
        print(f"stage-2 epoch: teacher inline {a:,.0f} tok/s, bank {b:,.0f} tok/s "
              f"(x{b / a:.2f}); bank built in {build_s:.1f} s", flush=True)
    result["matmul_dtype"] = str(perf.dtype).removeprefix("torch.")
    result["matmul_gflops"] = statistics.median(matmul) / 1e9
    result["matmul_size"] = args.matmul
    print(f"matmul {args.matmul}^2 {result['matmul_dtype']}: "
          f"{result['matmul_gflops']:,.0f} GFLOP/s")
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "".join(f"-{o.split('.')[-1].replace('=', '_')}" for o in args.set)
    path = args.out / f"lm-speed-{device.type}{tag}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    md = write_markdown(args.out)
    print(f"wrote {path} and {md}")
    return result


if __name__ == "__main__":
    main()
