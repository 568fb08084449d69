"""SIGKILL a tiny FitNets run at random points, resume it, count bit-identical finishes.

    PYTHONPATH=src python tools/kill_resume.py --trials 20 --seed 0

Writes tiny MNIST-format IDX files and trains a tiny teacher (in a work folder), runs one
uninterrupted reference distillation, then for each trial runs the same distillation,
kills it with SIGKILL at 1-3 random points (one per process, through the test hook
FITNETS_TEST_KILL_AT=EVENT:N: after the N-th optimiser step, the N-th complete checkpoint,
or halfway through the N-th atomic file write), resumes with --resume until it finishes,
and compares model.pt and metrics.jsonl (without the time field) with the reference.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = ["data.name=mnist", "data.download=false", "data.val_size=10",
        "data.batch_size=25", "train.optim.name=adam", "train.optim.lr=0.003",
        "hints.stage.optim.name=adam", "hints.stage.optim.lr=0.003"]
# 50 training images: 2 steps per epoch; 2 hint epochs + 2 KD epochs -> 8 steps, 6 checkpoints
# (12 checkpoint/checksum writes, then model.pt and summary.json); write 1 is config.yaml
EVENTS = {"step": (1, 8), "save": (1, 6), "write": (2, 15)}


def write_idx(path: Path, a: np.ndarray) -> None:
    data = struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    path.write_bytes(gzip.compress(data + a.astype(np.uint8).tobytes()))


def tiny_mnist(root: Path, rng: np.random.Generator) -> None:
    root.mkdir(parents=True)
    for prefix, n in (("train", 60), ("t10k", 30)):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 60, (n, 28, 28))
        for i, c in enumerate(y):
            x[i, 2 + 8 * (c // 4): 8 + 8 * (c // 4), 2 + 6 * (c % 4): 8 + 6 * (c % 4)] = 230
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", y)


FAILED_TO_LEARN = 3  # fitnets.cli: the run ended with a stage stalled at chance
ENDED = (0, FAILED_TO_LEARN)


def cli(args: list[str], kill_at: str | None = None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "FITNETS_TEST_KILL_AT"}
    env["PYTHONPATH"] = str(SRC)
    if kill_at:
        env["FITNETS_TEST_KILL_AT"] = kill_at
    r = subprocess.run([sys.executable, "-m", "fitnets", *args, "--quiet"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode not in (0, FAILED_TO_LEARN, -9):
        print(r.stderr, file=sys.stderr)
    return r.returncode


def outcome(run: Path) -> tuple[dict, list]:
    sys.path.insert(0, str(SRC))
    from fitnets.checkpoint import load_weights

    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        r.pop("time")
    return load_weights(run / "model.pt")["state_dict"], records


def same(a: tuple[dict, list], b: tuple[dict, list]) -> bool:
    return (a[1] == b[1] and a[0].keys() == b[0].keys()
            and all(torch.equal(a[0][k], b[0][k]) for k in a[0]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", help="work folder (default: a temporary one, removed)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, ... (every run of a trial)")
    a = ap.parse_args()
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="kill-resume-"))
    rng = random.Random(a.seed)
    tiny_mnist(work / "data", np.random.default_rng(a.seed))
    base = [*TINY, f"device={a.device}", f"data.root={work / 'data'}"]
    # these tiny runs may end at chance: exit 3 (FAILED_TO_LEARN) is a run that ran to its
    # end; what is compared is the resumed run against the uninterrupted one, code included
    assert cli(["train", *base, "train.epochs=1", f"out={work / 'teacher'}"]) in ENDED
    distill = ["distill", *base, f"teacher.weights={work / 'teacher'}", "method=fitnet",
               "hints.stage.epochs=2", "train.epochs=2", "data.augment_pad=2",
               "data.augment_flip=true"]
    ref_code = cli([*distill, f"out={work / 'ref'}"])
    assert ref_code in ENDED
    ref = outcome(work / "ref")
    exact = 0
    for t in range(a.trials):
        run = work / f"trial{t}"
        points = []
        for _ in range(rng.randint(1, 3)):
            event = rng.choice(sorted(EVENTS))
            points.append(f"{event}:{rng.randint(*EVENTS[event])}")
        kills, code = 0, None
        for i, point in enumerate(points):
            code = cli([*distill, f"out={run}"] if i == 0 else ["distill", "--resume", str(run)],
                       kill_at=point)
            if code != -9:
                break
            kills += 1
        while code == -9:
            code = cli(["distill", "--resume", str(run)])
        ok = code == ref_code and same(outcome(run), ref)
        exact += ok
        print(f"trial {t:2d}: kills at {', '.join(points[:kills]) or '(none reached)'}: "
              f"{'identical' if ok else 'DIFFERENT'}", flush=True)
        shutil.rmtree(run, ignore_errors=True)
    print(f"{exact}/{a.trials} killed-and-resumed runs finished bit-identical to the "
          "uninterrupted run (weights and metrics)")
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if exact == a.trials else 1)


if __name__ == "__main__":
    main()
