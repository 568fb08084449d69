"""How many optimiser steps a recipe's student needs to leave chance, under each optimiser
variant: the measurement behind the paper recipes' ``rmsprop_floor`` (issue 23).

    python benchmarks/escape.py --out runs/escape --train-limit 5000 --val-size 1000 \\
        --test-limit 1000 --batch-size 32 --teacher-epochs 4 --hint-epochs 2 --kd-epochs 6

Trains one teacher from ``--teacher-recipe`` (or reuses ``--teacher DIR``), then the
student recipe once per variant (``--variants``, from VARIANTS below), each into its own run
directory; prints and writes ``--out/escape.md``: per variant, the hint loss of stage 1 (first
-> last epoch, and the stage's warning if its regressor died), stage 2's held-out accuracy
per epoch, the first step at which it was more than 2 points above chance, and whether the
stall guard marked the run. Steps are counted, not seconds: the figure does not depend on
the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_run_options, provenance, run_once, teacher_run  # noqa: E402

from fitnets import stall  # noqa: E402

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
STAGES = ("hints.stage.optim", "train.optim")
VARIANTS = {  # name -> overrides of both stages' optimiser
    "floor-1e-5": [f"{s}.name=rmsprop_pylearn2" for s in STAGES]
    + [f"{s}.rmsprop_floor=1e-5" for s in STAGES],  # the authors' code, exactly
    "floor-1e-8": [f"{s}.name=rmsprop_pylearn2" for s in STAGES]
    + [f"{s}.rmsprop_floor=1e-8" for s in STAGES],  # the paper recipes' default
    "torch-rmsprop": [f"{s}.name=rmsprop" for s in STAGES],
}
VARIANTS["floor-1e-8+mean"] = [*VARIANTS["floor-1e-8"], "hints.reduction=mean"]
VARIANTS["floor-1e-8+init-torch"] = [*VARIANTS["floor-1e-8"], "student.init=torch"]
VARIANTS["floor-1e-5+init-torch"] = [*VARIANTS["floor-1e-5"], "student.init=torch"]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/escape")
    p.add_argument("--teacher-recipe", default="cifar10-teacher.yaml")
    p.add_argument("--student-recipe", default="cifar10-fitnet4.yaml")
    p.add_argument("--teacher", type=Path, help="reuse this finished teacher run")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--train-limit", type=int, default=5000)
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--test-limit", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--teacher-epochs", type=int, default=4)
    p.add_argument("--hint-epochs", type=int, default=2)
    p.add_argument("--kd-epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    add_run_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse(argv)
    out = Path(args.out)
    t0 = time.perf_counter()
    data = [f"data.train_limit={args.train_limit}", f"data.val_size={args.val_size}",
            f"data.test_limit={args.test_limit}", f"data.batch_size={args.batch_size}",
            f"seed={args.seed}", *args.set]
    teacher = teacher_run(args.teacher, lambda: run_once(
        str(RECIPES / args.teacher_recipe), "train", out / "teacher",
        [*data, f"train.epochs={args.teacher_epochs}", "train.patience=0"],
        args.resume, args.device, not args.quiet))
    rows = []
    for name in args.variants:
        run_dir = run_once(str(RECIPES / args.student_recipe), "distill", out / name,
                           [*data, *VARIANTS[name], f"teacher.weights={teacher}",
                            f"hints.stage.epochs={args.hint_epochs}", "hints.stage.patience=0",
                            f"train.epochs={args.kd_epochs}", "train.patience=0"],
                           args.resume, args.device, not args.quiet)
        rows.append(summarise(name, run_dir))
    steps = math.ceil((args.train_limit - args.val_size) / args.batch_size)
    text = "\n".join([table(rows, steps, teacher), "",
                      *provenance(argv, time.perf_counter() - t0)])
    (out / "escape.md").write_text(text)
    print(text)
    return out / "escape.md"


def summarise(name: str, run_dir: Path) -> dict:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    hints = [r["train_loss"] for r in records if r["stage"] == "hints"]
    kd = [r for r in records if r["stage"] != "hints"]
    warning = next((s.get("warning") for s in summary["stages"] if s.get("warning")), None)
    return {"name": name, "hints": hints, "accs": [r.get("val_acc", r["test_acc"]) for r in kd],
            "stalled": summary.get("stalled", False), "warning": warning,
            "test_acc": summary["test_acc"]}


def table(rows: list[dict], steps_per_epoch: int, teacher: Path) -> str:
    t = json.loads((Path(teacher) / "summary.json").read_text())
    lines = [f"Teacher: test accuracy {100 * t['test_acc']:.2f}%, {steps_per_epoch} steps an "
             "epoch.", "",
             "| variant | hint loss (first -> last epoch) | regressor | stage-2 held-out "
             "accuracy by epoch | first step above chance + 2 points | final test acc. "
             "| stalled |", "|---|---|---|---|---:|---:|---|"]
    chance = 0.1  # CIFAR-10's balanced classes
    for r in rows:
        first = next((i for i, a in enumerate(r["accs"], 1) if a > chance + stall.MARGIN), None)
        escape = "never" if first is None else f"<= {first * steps_per_epoch}"
        hints = (f"{r['hints'][0]:.4g} -> {r['hints'][-1]:.4g}" if r["hints"] else "-")
        alive = "died (warned)" if r["warning"] and "same for every" in r["warning"] else "alive"
        accs = ", ".join(f"{100 * a:.1f}" for a in r["accs"])
        lines.append(f"| {r['name']} | {hints} | {alive} | {accs} | {escape} "
                     f"| {100 * r['test_acc']:.2f}% | {'STALLED' if r['stalled'] else 'no'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
