"""Run the same two-process ``fitnets distill`` job through torchrun N times and count the
jobs that fail, to catch failures that show up once in tens of runs (such as a rank that
aborts at exit after a finished run).

    python tools/torchrun_repeat.py --jobs 60 [--out DIR] [key=value ...]

Each job: 2 CPU processes (gloo), the tiny synthetic MNIST of the test suite, a teacher
trained once, hints + KD for 2 + 2 epochs, the disk teacher cache. A failed job's stdout and
stderr are kept in DIR/failed-K.log; the last line says how many failed.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["device=cpu", "perf.precision=fp32", "perf.channels_last=false", "data.name=mnist",
        "data.download=false", "data.val_size=40", "data.batch_size=32",
        "train.optim.name=sgd", "train.optim.lr=0.02", "hints.stage.optim.name=sgd",
        "hints.stage.optim.lr=0.005", "student.init=torch", "method=fitnet",
        "hints.stage.epochs=2", "train.epochs=2", "data.augment_pad=0",
        "data.augment_flip=true", "perf.teacher_cache=disk"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=30)
    ap.add_argument("--out", type=Path, default=None, help="kept: failed jobs' logs")
    ap.add_argument("overrides", nargs="*", help="more key=value config overrides")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_tiny_mnist
    from fitnets.config import make_config
    from fitnets.run import run

    out = args.out or Path(tempfile.mkdtemp(prefix="torchrun-repeat-"))
    out.mkdir(parents=True, exist_ok=True)
    data = write_tiny_mnist(out / "data", n_train=168, n_test=40)
    teacher = out / "teacher"
    if not (teacher / "model.pt").exists():
        run(make_config(None, [*ARGS[:-1], f"data.root={data}", "model.name=mnist_teacher",
                               "train.epochs=1"]), "train", teacher, verbose=False)
    job = [*ARGS, f"data.root={data}", f"teacher.weights={teacher}", *args.overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    failed = 0
    for k in range(args.jobs):
        env["FITNETS_CACHE"] = str(out / f"cache-{k}")
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
             "--master-addr", "127.0.0.1", "--master-port", str(_port()), "-m", "fitnets",
             "distill", *job, "--out", str(out / f"run-{k}")],
            env=env, capture_output=True, text=True, timeout=600)
        if done.returncode:
            failed += 1
            (out / f"failed-{k}.log").write_text(done.stdout + "\n--- stderr\n" + done.stderr)
        print(f"job {k + 1}/{args.jobs}: exit {done.returncode} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"{failed} of {args.jobs} jobs failed; logs of failed jobs in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
