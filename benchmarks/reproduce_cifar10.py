"""Reproduce the paper's CIFAR-10 Table 1: the maxout teacher, FitNets 1-4, and the KD and
back-propagation baselines for FitNet 4, with the paper's numbers beside ours.

On one GPU, about 10 minutes (the full 40k/10k split, a few epochs per stage)::

    python benchmarks/reproduce_cifar10.py --out runs/cifar10-table1 --device cuda \\
        --epochs-teacher 30 --hint-epochs 5 --epochs-student 20

On a CPU, a slice (first N training images; minutes to an hour)::

    python benchmarks/reproduce_cifar10.py --out runs/cifar10-slice --train-limit 5000 \\
        --val-size 1000 --test-limit 1000 --epochs-teacher 8 --hint-epochs 3 \\
        --epochs-student 8 --students fitnet4 kd4 backprop4

Runs ``recipes/cifar10-teacher.yaml`` (or reuses ``--teacher DIR``), then each student of
``--students`` from ``recipes/cifar10-fitnet{1,2,3,4}.yaml`` (``kd4`` / ``backprop4``: the
FitNet 4 recipe with ``method=kd`` / ``method=backprop``), each into its own run directory
under ``--out``; ``--resume`` skips finished runs and continues killed ones. The data comes
from ``FITNETS_DATA`` (``cifar10/`` pickles or ``cifar10-jpeg.zip``). A run whose stage
stalled at chance is listed as a failure, never as a number. ``--out/report.md`` holds the
table, the command, the hardware and the time, then the full ``fitnets report``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    add_role_options,
    add_run_options,
    epochs,
    provenance,
    recipe_runner,
    teacher_run,
)

from fitnets.report import load_run, mean_std, report, split_stalled, stalled_note  # noqa: E402

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
# Romero et al. 2015, Table 1 (CIFAR-10 test accuracy, %, and parameters). The paper gives
# no figure for FitNet 4 by KD or back-propagation alone; its depth study (Section 4) says
# both fail to train the deepest thin students, which these two rows check.
PAPER = {"teacher": (90.18, "~9M"), "fitnet1": (89.01, "~250K"), "fitnet2": (91.06, "~862K"),
         "fitnet3": (91.10, "~1.6M"), "fitnet4": (91.61, "~2.5M"), "kd4": (None, "~2.5M"),
         "backprop4": (None, "~2.5M")}
LABELS = {"teacher": "Teacher (maxout conv)", "fitnet1": "FitNet 1 (hints + KD)",
          "fitnet2": "FitNet 2 (hints + KD)", "fitnet3": "FitNet 3 (hints + KD)",
          "fitnet4": "FitNet 4 (hints + KD)", "kd4": "FitNet 4 architecture, KD only",
          "backprop4": "FitNet 4 architecture, back-propagation"}
STUDENTS = ("fitnet1", "fitnet2", "fitnet3", "fitnet4", "kd4", "backprop4")


def student_recipe(key: str) -> tuple[str, list[str]]:
    """The recipe file and the method override of one student row."""
    if key.startswith("fitnet"):
        return f"cifar10-{key}.yaml", []
    method = key[:-1]  # kd4 -> kd, backprop4 -> backprop
    return "cifar10-fitnet4.yaml", [f"method={method}"]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/cifar10-table1", help="directory of all runs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="student seeds")
    p.add_argument("--students", nargs="+", default=list(STUDENTS), choices=STUDENTS)
    p.add_argument("--epochs-teacher", type=int, help="teacher epochs (default: recipe's)")
    p.add_argument("--epochs-student", type=int, help="student (stage 2) epochs")
    p.add_argument("--hint-epochs", type=int, help="FitNet stage-1 epochs")
    p.add_argument("--train-limit", type=int, default=0, help="first N training images (0: all)")
    p.add_argument("--val-size", type=int, help="validation images held out of training")
    p.add_argument("--test-limit", type=int, default=0, help="first N test images (0: all)")
    p.add_argument("--teacher", type=Path, help="reuse this finished teacher run directory")
    add_role_options(p)
    add_run_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse(argv)
    out = Path(args.out)
    t0 = time.perf_counter()
    common = [f"data.train_limit={args.train_limit}", f"data.test_limit={args.test_limit}",
              *([f"data.val_size={args.val_size}"] if args.val_size is not None else []),
              *args.set]

    go = recipe_runner(args, out, common, RECIPES)

    teacher = teacher_run(args.teacher, lambda: go(
        "cifar10-teacher.yaml", "train", "teacher",
        [f"seed={args.seeds[0]}", *epochs("train.epochs", args.epochs_teacher),
         *args.teacher_set]))
    dirs = {"teacher": [teacher]}
    for seed in args.seeds:
        for key in args.students:
            recipe, method = student_recipe(key)
            extra = [*method, f"seed={seed}", *epochs("train.epochs", args.epochs_student),
                     *args.student_set]
            if key != "backprop4":
                extra.append(f"teacher.weights={teacher}")
            if key.startswith("fitnet"):
                extra += epochs("hints.stage.epochs", args.hint_epochs)
            dirs.setdefault(key, []).append(go(recipe, "distill", f"{key}-s{seed}", extra))
    elapsed = time.perf_counter() - t0
    preamble = table1(dirs) + "\n\n" + "\n".join(provenance(argv, elapsed))
    all_dirs = [d for ds in dirs.values() for d in ds]
    path = report(all_dirs, out, title="CIFAR-10, Table 1 of Romero et al. (2015)",
                  preamble=preamble)
    print(f"wrote {path}")
    return path


def table1(dirs: dict[str, list[Path]]) -> str:
    """Our final test accuracy (mean ± std over the seeds that learned) beside the paper's."""
    lines = ["## Table 1", "",
             "| network | parameters | test accuracy (ours, final model) | seeds "
             "| test accuracy (paper) | parameters (paper) |", "|---|---:|---:|---|---:|---:|"]
    for key, paths in dirs.items():
        done, stalled = split_stalled([load_run(p) for p in paths])
        if done:
            m, s, n = mean_std([r.summary["test_acc"] for r in done])
            ours = f"{100 * m:.2f}%" + (f" ± {100 * s:.2f} (n={n})" if n > 1 else " (n=1)")
        else:
            ours = "- (none learned)" if stalled else "- (not finished)"
        ours += stalled_note(stalled)
        params = f"{done[0].summary['params']:,}" if done else "-"
        seeds = ", ".join(str(r.config.get("seed")) for r in done) or "-"
        acc, p_params = PAPER[key]
        paper = "-" if acc is None else f"{acc:.2f}%"
        lines.append(f"| {LABELS[key]} | {params} | {ours} | {seeds} | {paper} | {p_params} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
