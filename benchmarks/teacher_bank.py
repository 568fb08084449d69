"""What the teacher bank (perf.teacher_cache, distill/teacher_cache.py) costs and saves.

    python benchmarks/teacher_bank.py [--teacher cifar_fast_teacher] [--student fitnet1]
        [--images 2048] [--pad 2] [--flip alternate] [--batch 256] [--repeats 3]
        [--data random|real] [--device cpu|cuda] [--bank memory|disk]
        [--full-images 45000] [--run-epochs 10] [--set perf.KEY=VALUE ...]

Measured in one process on ``--images`` training images with the recipe's augmentation
(``--pad`` pixels of translation, flips random, alternating or none):

build:    the bank of every view (flips x (2 pad + 1)^2 offsets x images) of the teacher's
          logits, built as a run builds it (``Teacher.prepare``); img/s = teacher forwards/s.
bank:     a KD epoch of the student (the project's loop, ``Trainer.train_epoch`` on the KD
          stage) reading the teacher's logits from the bank.
inline:   the same epoch running the teacher on every batch (perf.teacher_cache=off).
backprop: a back-propagation epoch of the same student (no teacher): the limit a bank can
          reach. Issue 32's goal: bank >= 0.9x backprop.

The three epochs are timed in turn, one of each per repeat (the median kept), so that a slow
spell of a shared machine falls on all of them. From the rates: the build's time at full size
(``--full-images``) and how many KD runs of ``--run-epochs`` epochs it takes for the time the
bank saves to repay its build. ``--data random`` (default) uses random normal images (speed
only); ``real`` the recipe's CIFAR-10 (data.root or $FITNETS_DATA), its first ``--images``.
Writes benchmarks/results/teacher-bank-<teacher>-<device>.json (``--out`` folder).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from fitnets.config import make_config
from fitnets.data.augment import augment_with_flips, view_count
from fitnets.data.memory import Arrays, Data
from fitnets.distill.methods import Setup, backprop, kd
from fitnets.distill.teacher import LOGITS, Teacher
from fitnets.models import build_model, data_init
from fitnets.optim import make_optimizer
from fitnets.perf import resolve_perf
from fitnets.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import hardware, sync, timed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "cifar10-teacher-fast.yaml"
RESULTS = Path(__file__).resolve().parent / "results"


def make_data(a, device, perf) -> Data:
    """``a.images`` training images (random or the recipe's CIFAR-10) with the bench's
    augmentation, in the run's layout."""
    flip = a.flip == "true"
    if a.data == "real":
        from fitnets.data.prepare import prepare

        cfg = make_config(RECIPE, [f"data.train_limit={a.images}", "data.val_size=0",
                                   "data.test_limit=100", f"data.augment_pad={a.pad}",
                                   f"data.augment_flip={a.flip}", f"data.batch_size={a.batch}",
                                   *[s for s in a.set if s.startswith("data.")]])
        data = prepare(cfg.data, device).data
        data.map_x(perf.layout)
        return data
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.images, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (a.images,), generator=g).to(device)
    data = Data(Arrays(perf.layout(x), y), None, Arrays(perf.layout(x[:256]), y[:256]),
                a.batch, 512, alternate_flips=a.flip == "alternate")
    if a.pad or flip:
        data.augment = lambda v, gen: augment_with_flips(v, gen, pad=a.pad, flip=flip)
    return data


def epoch_fn(kind, a, cfg, perf, data, teacher, device):
    """One warmed-up epoch of ``kind`` (bank, inline, backprop) on a fresh student."""
    torch.manual_seed(0)
    student = perf.prepare(build_model(a.student, in_channels=3).to(device))
    data_init(student, data)
    setup = Setup(cfg, student, teacher, data, (3, 32, 32))
    stage = (backprop.stages(setup)[0].build() if kind == "backprop"
             else kd.KDStage(setup))
    tmp = tempfile.TemporaryDirectory()
    trainer = Trainer(Path(tmp.name), data, student, perf=perf, verbose=False)
    trainer.attach(stage)
    opt = make_optimizer(stage.param_groups, stage.cfg.optim)
    scaler = perf.scaler()
    stage.start_epoch(1)
    rows = min(len(data.train), 2 * a.batch + len(data.train) % a.batch)  # warm-up shapes
    warm = Data(Arrays(data.train.x[:rows], data.train.y[:rows]), None, data.test, a.batch,
                512, data.augment, data.alternate_flips)
    Trainer(Path(tmp.name), warm, student, perf=perf, verbose=False).train_epoch(
        stage, opt, scaler, 1)
    epoch = [0]

    def run_epoch():
        epoch[0] += 1
        trainer.train_epoch(stage, opt, scaler, epoch[0])

    run_epoch.directory = tmp  # removed when the epoch function goes
    return run_epoch


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="cifar_fast_teacher")
    ap.add_argument("--student", default="fitnet1")
    ap.add_argument("--images", type=int, default=2048, help="training images measured")
    ap.add_argument("--pad", type=int, default=2, help="translation in pixels (recipe: 2)")
    ap.add_argument("--flip", choices=["alternate", "true", "false"], default="alternate")
    ap.add_argument("--batch", type=int, default=256, help="the student's batch")
    ap.add_argument("--eval-batch", type=int, default=512, help="the bank build's batch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", choices=["random", "real"], default="random")
    ap.add_argument("--bank", choices=["memory", "disk"], default="memory",
                    help="disk: into a temporary FITNETS_CACHE (fsync, checksum included)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--full-images", type=int, default=45_000,
                    help="training images of a full run, for the projections")
    ap.add_argument("--run-epochs", type=int, default=10,
                    help="epochs of one student run reading the teacher, for the projections")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides, e.g. perf.precision=fp32")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON file")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    base = ["train.optim.name=sgd", "train.optim.lr=0.001", "train.optim.momentum=0.9",
            f"data.augment_pad={a.pad}", f"data.augment_flip={a.flip}",
            f"data.batch_size={a.batch}", *a.set]
    perf = resolve_perf(make_config(None, base).perf, device)
    data = make_data(a, device, perf)
    n = len(data.train)
    flips = a.flip != "false"
    views = view_count(a.pad, flips)
    torch.manual_seed(0)
    net = perf.prepare(build_model(a.teacher, in_channels=3).to(device))
    data_init(net, data)
    net.eval().requires_grad_(False)
    print(f"{hardware(device)}\n{perf.describe()}; teacher {a.teacher}, student {a.student}, "
          f"{n} {a.data} images, pad {a.pad}, flips {a.flip}: {views} views", flush=True)

    bank_cfg = make_config(None, [*base, f"perf.teacher_cache={a.bank}"])
    cache_dir = tempfile.TemporaryDirectory()
    if a.bank == "disk":
        os.environ["FITNETS_CACHE"] = cache_dir.name
    banked = Teacher(net, bank_cfg, perf, data.train.x, a.eval_batch, say=print)
    sync(device)
    t0 = time.perf_counter()
    banked.prepare([LOGITS], epochs=a.run_epochs)
    sync(device)
    build_s = time.perf_counter() - t0
    build_rate = views * n / build_s
    inline = Teacher(net, make_config(None, [*base, "perf.teacher_cache=off"]), perf,
                     data.train.x, a.eval_batch)
    epochs = {"bank": epoch_fn("bank", a, bank_cfg, perf, data, banked, device),
              "inline": epoch_fn("inline", a, bank_cfg, perf, data, inline, device),
              "backprop": epoch_fn("backprop", a, bank_cfg, perf, data, None, device)}
    times = timed(epochs, a.repeats, device)
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    full = a.full_images
    full_build_s = views * full / build_rate
    saved_per_run = a.run_epochs * full * (1 / rate["inline"] - 1 / rate["bank"])
    out = {
        "hardware": hardware(device), "device": str(device), "perf": perf.describe(),
        "command": "python benchmarks/teacher_bank.py " + " ".join(sys.argv[1:] if argv is None
                                                                  else argv),
        "teacher": a.teacher, "student": a.student, "data": a.data, "images": n,
        "pad": a.pad, "flip": a.flip, "views": views, "batch": a.batch, "repeats": a.repeats,
        "bank": a.bank, "build_s": build_s, "build_img_s": build_rate,
        "bank_bytes": int(banked._caches[LOGITS].store.numel()
                          * banked._caches[LOGITS].store.element_size()),
        "epoch_img_s": rate, "epoch_s": times,
        "bank/backprop": rate["bank"] / rate["backprop"],
        "bank/inline": rate["bank"] / rate["inline"],
        "inline/backprop": rate["inline"] / rate["backprop"],
        "full_images": full, "run_epochs": a.run_epochs,
        "full_build_minutes": full_build_s / 60,
        "full_inline_run_minutes": a.run_epochs * full / rate["inline"] / 60,
        "full_bank_run_minutes": a.run_epochs * full / rate["bank"] / 60,
        "runs_to_amortise": (full_build_s / saved_per_run if saved_per_run > 0
                             else float("inf")),
        "runs_by_forwards": views / a.run_epochs,
    }
    print(f"build: {views} views x {n} images in {build_s:.1f} s = {build_rate:,.0f} teacher "
          f"forwards/s ({out['bank_bytes'] / 2**20:.1f} MiB)")
    for k in ("bank", "inline", "backprop"):
        print(f"{k:8s} KD epoch {rate[k]:8,.0f} img/s" if k != "backprop"
              else f"{k:8s} epoch    {rate[k]:8,.0f} img/s (no teacher)")
    ok = "meets" if out["bank/backprop"] >= 0.9 else "misses"
    print(f"bank/backprop {out['bank/backprop']:.2f} ({ok} the 0.9 goal), bank/inline "
          f"{out['bank/inline']:.2f}, inline/backprop {out['inline/backprop']:.2f}")
    print(f"full size ({full:,} images, {a.run_epochs}-epoch runs): build "
          f"{out['full_build_minutes']:.1f} min; a run {out['full_inline_run_minutes']:.1f} min "
          f"inline, {out['full_bank_run_minutes']:.1f} min with the bank; the build pays for "
          f"itself after {out['runs_to_amortise']:.1f} runs (by teacher forwards alone: "
          f"{out['runs_by_forwards']:.1f})")
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"teacher-bank-{a.teacher}-{device.type}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    cache_dir.cleanup()
    return out


if __name__ == "__main__":
    main()
