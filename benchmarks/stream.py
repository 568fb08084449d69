"""Streaming vs in-memory data, and streaming at ImageNet resolution.

    python benchmarks/stream.py cifar  [--steps 20]      # needs FITNETS_DATA with cifar10-jpeg.zip
    python benchmarks/stream.py folder [--sizes 5000 20000] [--steps 8]

cifar:  a stage-2 (KD) step of the cifar_teacher -> fitnet1 pair on CIFAR-10's JPEG copy,
        the project's own loop (Trainer.train_epoch), once with the data in memory and once
        streamed by 2 worker processes; images/s of each and their ratio.
folder: a generated folder of 224x224 JPEGs (made once, under --work) at two sizes; a
        backprop step of a ResNet-18-size student (11.7M parameters) streamed with
        random-resized crops; images/s of the step, images/s the loader alone delivers,
        whether the loader or the model sets the pace, and the peak memory (PSS) of the
        process tree (main process + workers), which should not grow with the dataset.
Writes benchmarks/results/stream/<what>.json and rewrites benchmarks/results/stream/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from fitnets.config import make_config
from fitnets.data.prepare import prepare
from fitnets.distill.methods import Setup, backprop, kd
from fitnets.distill.teacher import Teacher
from fitnets.models import build_model
from fitnets.optim import make_optimizer
from fitnets.perf import resolve_perf
from fitnets.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import hardware  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "stream"


class PeakRSS:
    """The largest summed memory (PSS) of this process and its children, sampled."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> int:
        pids, total = [os.getpid()], 0
        try:
            kids = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
            pids += [int(k) for k in kids]
        except OSError:
            pass
        for pid in pids:
            try:  # PSS: pages shared with the forked workers are counted once
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                continue
        return total

    def _run(self):
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self._tree())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def time_epochs(trainer: Trainer, stage, repeats: int) -> list[float]:
    opt = make_optimizer(stage.param_groups, stage.cfg.optim)
    scaler = trainer.perf.scaler()
    trainer.perf.prepare(stage.module)
    trainer.train_epoch(stage, opt, scaler, 1)  # warm-up (and worker start)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        trainer.train_epoch(stage, opt, scaler, 1)
        times.append(time.perf_counter() - t0)
    return times


def cifar(args) -> dict:
    """In memory vs streamed, the same images, model pair and loop."""
    n = 128 * args.steps
    out = {"images": n, "steps": {}, "device": args.device}
    device = torch.device(args.device)
    for mode in ("memory", "stream"):
        cfg = make_config(None, [
            f"device={args.device}", "data.name=cifar10", "data.val_size=0",
            f"data.train_limit={n}", "data.test_limit=128", "data.preprocess=standardize",
            "data.augment_pad=4", "data.augment_flip=true", f"data.mode={mode}", "data.workers=2",
            "perf.teacher_cache=off", "student.name=fitnet1", "teacher.name=cifar_teacher"])
        perf = resolve_perf(cfg.perf, device)
        prepared = prepare(cfg.data, device)
        prepared.data.map_x(perf.layout)
        torch.manual_seed(0)
        net = build_model("cifar_teacher").eval().to(device)
        student = build_model("fitnet1").to(device)
        perf.prepare(net)
        perf.prepare(student)
        teacher = Teacher(net, cfg, perf, getattr(prepared.data.train, "x", None), 512)
        stage = kd.KDStage(Setup(cfg, student, teacher, prepared.data, (3, 32, 32)))
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(Path(tmp), prepared.data, student, perf=perf, verbose=False)
            times = time_epochs(trainer, stage, args.repeats)
        out["steps"][mode] = n / statistics.median(times)
        print(f"cifar stage-2 {mode:6s}: {out['steps'][mode]:7.1f} img/s "
              f"(epochs {', '.join(f'{t:.2f}' for t in times)} s)", flush=True)
    out["stream/memory"] = out["steps"]["stream"] / out["steps"]["memory"]
    print(f"streamed / in memory: {out['stream/memory']:.2f}")
    return out


def make_folder(root: Path, n: int, size: int = 224, classes: int = 10) -> Path:
    """``n`` JPEGs of ``size`` x ``size`` in ``classes`` class folders, plus a small test/."""
    if (root / "done").exists():
        return root
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (classes, 8, 8, 3)).astype(np.uint8)
    for split, count in (("train", n), ("test", 10 * classes)):
        for i in range(count):
            c = i % classes
            d = root / split / f"c{c}"
            d.mkdir(parents=True, exist_ok=True)
            img = Image.fromarray(base[c]).resize((size, size), Image.BILINEAR)
            noise = rng.integers(-30, 30, (size, size, 3))
            arr = (np.asarray(img, dtype=np.int64) + noise).clip(0, 255).astype(np.uint8)
            Image.fromarray(arr).save(d / f"{i:06d}.jpg", quality=85)
    (root / "done").write_text(str(n))
    return root


def resnet18(num_classes: int = 10) -> nn.Module:
    """ResNet-18's shape (BasicBlocks 2-2-2-2, 64..512 channels), written out here."""
    def block(cin, cout, stride):
        body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout else nn.Identity())
        return Residual(body, skip)

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
              nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [block(cin, cout, stride), block(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(512, num_classes))


class Residual(nn.Module):
    def __init__(self, body, skip):
        super().__init__()
        self.body, self.skip = body, skip

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


def folder(args) -> dict:
    """Each size in a fresh process, so that one size's memory does not count for the next."""
    out = {"sizes": {}}
    for n in args.sizes:
        make_folder(Path(args.work) / f"jpeg224-{n}", n)
        cmd = [sys.executable, __file__, "folder-one", "--sizes", str(n), "--steps",
               str(args.steps), "--repeats", str(args.repeats), "--batch", str(args.batch),
               "--work", args.work]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        out["sizes"][n] = r
        print(f"folder of {n:,} 224px JPEGs: step {r['step_img_s']:.1f} img/s, loader alone "
              f"{r['loader_img_s']:.1f} img/s ({r['bound']}-bound), peak memory "
              f"{r['peak_pss_mib']:.0f} MiB (PSS, main + workers)", flush=True)
    return out


def folder_one(args) -> dict:
    """The loader alone over the whole folder (its first batches), then training steps of a
    ResNet-18-size student on a slice of it, with the peak memory of the process tree."""
    n = args.sizes[0]
    path = Path(args.work) / f"jpeg224-{n}"
    base = ["device=cpu", "data.name=folder", f"data.path={path}", "data.image_size=224",
            "data.mode=stream", "data.random_crop=true", "data.preprocess=standardize",
            f"data.batch_size={args.batch}", "data.val_size=0", "data.workers=2"]
    steps = args.steps
    with PeakRSS() as mem:
        cfg = make_config(None, base)
        full = prepare(cfg.data, torch.device("cpu"))
        g = torch.Generator().manual_seed(0)
        batches = full.data.train_batches(g)
        next(batches)  # workers started
        t0 = time.perf_counter()
        for _ in range(4 * steps):
            next(batches)
        loader = 4 * steps * args.batch / (time.perf_counter() - t0)
        del batches
        cfg = make_config(None, [*base, f"data.train_limit={args.batch * steps}"])
        perf = resolve_perf(cfg.perf, torch.device("cpu"))
        part = prepare(cfg.data, torch.device("cpu"))
        part.data.map_x(perf.layout)
        torch.manual_seed(0)
        student = resnet18()
        perf.prepare(student)
        stage = backprop.stages(Setup(cfg, student, None, part.data, (3, 224, 224)))[0].build()
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(Path(tmp), part.data, student, perf=perf, verbose=False)
            times = time_epochs(trainer, stage, args.repeats)
    step = args.batch * steps / statistics.median(times)
    return {"files": n + 100, "step_img_s": step, "loader_img_s": loader,
            "bound": "loader" if loader < 1.2 * step else "compute",
            "peak_pss_mib": mem.peak / 2**20}


def write_readme() -> None:
    lines = ["# Streaming benchmarks", "", "Written by `benchmarks/stream.py`.", ""]
    for f in sorted(RESULTS.glob("*.json")):
        r = json.loads(f.read_text())
        lines += [f"## {f.stem}", "", f"Command: `{r['command']}`  ", f"Hardware: {r['hardware']}",
                  ""]
        if f.stem == "cifar":
            lines += ["| data | stage-2 img/s |", "|---|---:|"]
            lines += [f"| {k} | {v:.1f} |" for k, v in r["steps"].items()]
            lines += ["", f"Streamed / in memory: **{r['stream/memory']:.2f}** "
                      f"({r['images']} CIFAR-10 JPEG images an epoch, batch 128, 2 workers, "
                      "pad-crop + flip, teacher recomputed).", ""]
        else:
            lines += ["| files in the folder | step img/s | loader alone img/s | pace set by | "
                      "peak memory, PSS (MiB) |", "|---:|---:|---:|---|---:|"]
            lines += [f"| {v['files']:,} | {v['step_img_s']:.1f} | {v['loader_img_s']:.1f} | "
                      f"{v['bound']} | {v['peak_pss_mib']:.0f} |" for v in r["sizes"].values()]
            lines += ["", "224x224 JPEGs, batch 16, 2 workers, random-resized crops; the loader "
                      "alone reads the whole folder's first batches; the step trains a "
                      "ResNet-18-size student (11.7M parameters) on a slice of it.", ""]
    (RESULTS / "README.md").write_text("\n".join(lines))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["cifar", "folder", "folder-one"])
    ap.add_argument("--steps", type=int, default=None, help="steps per timed epoch")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cifar: the training device")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--batch", type=int, default=16, help="folder: batch size")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "fitnets-stream-bench"))
    args = ap.parse_args(argv)
    args.steps = args.steps or (20 if args.what == "cifar" else 6)
    if args.what == "folder-one":  # one size, in its own process: prints its JSON
        print(json.dumps(folder_one(args)))
        return
    t0 = time.perf_counter()
    result = cifar(args) if args.what == "cifar" else folder(args)
    result.update(command="python benchmarks/stream.py " + " ".join(sys.argv[1:]),
                  hardware=hardware(), wall_s=round(time.perf_counter() - t0, 1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.what}.json").write_text(json.dumps(result, indent=2))
    write_readme()


if __name__ == "__main__":
    main()
