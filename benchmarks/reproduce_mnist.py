"""Reproduce the paper's MNIST Table 4: teacher, then students by backprop, KD and FitNet.

One command (the paper's protocol: up to 500 epochs, early stopping with patience 100;
days on a CPU, hours on a GPU):

    python benchmarks/reproduce_mnist.py --out runs/mnist-table4 --seeds 0 1 2

A short smoke run (minutes on a CPU):

    python benchmarks/reproduce_mnist.py --out runs/mnist-smoke --train-limit 500 \\
        --epochs-teacher 1 --epochs-student 1 --hint-epochs 1 --seeds 0

It trains one teacher (``recipes/mnist-teacher.yaml`` or ``--teacher-recipe``, seed of the
first ``--seeds``; or reuses ``--teacher DIR``), then for each seed the student of
``recipes/mnist-{backprop,kd,fitnet}.yaml``, each into its own
run directory under ``--out``; ``--resume`` skips finished runs and continues killed ones.
At the end ``--out/report.md`` holds a Table-4-style table beside the paper's numbers, the
command, the hardware and the wall-clock time, then the full ``fitnets report``.
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
# Romero et al. 2015, Table 4: test error (%) and parameters
PAPER = {"teacher": (0.55, "~361K"), "backprop": (1.90, "~30K"), "kd": (0.65, "~30K"),
         "fitnet": (0.51, "~30K")}
METHODS = ("backprop", "kd", "fitnet")
LABELS = {"teacher": "Teacher (maxout conv)", "backprop": "Student, standard back-propagation",
          "kd": "Student, KD", "fitnet": "Student, hints + KD (FitNet)"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/mnist-table4", help="directory of all runs + report")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="student seeds")
    p.add_argument("--epochs-teacher", type=int, help="teacher epochs (default: recipe's 500)")
    p.add_argument("--epochs-student", type=int, help="student (stage 2) epochs (default 500)")
    p.add_argument("--hint-epochs", type=int, help="FitNet stage-1 epochs (default 500)")
    p.add_argument("--train-limit", type=int, default=0, help="first N training images (0: all)")
    p.add_argument("--teacher-recipe", default="mnist-teacher.yaml",
                   help="teacher recipe in recipes/ (e.g. mnist-teacher-maxout-paper.yaml)")
    p.add_argument("--teacher", type=Path,
                   help="reuse this finished teacher run directory instead of training one")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                   help="student methods to run (default: all three)")
    add_role_options(p)
    add_run_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse(argv)
    out = Path(args.out)
    t0 = time.perf_counter()
    common = [f"data.train_limit={args.train_limit}", *args.set]

    go = recipe_runner(args, out, common, RECIPES)

    t_ep = epochs("train.epochs", args.epochs_teacher)
    s_ep = epochs("train.epochs", args.epochs_student)
    h_ep = epochs("hints.stage.epochs", args.hint_epochs)
    teacher = teacher_run(args.teacher, lambda: go(
        args.teacher_recipe, "train", "teacher", [f"seed={args.seeds[0]}", *t_ep,
                                                  *args.teacher_set]))
    dirs = {"teacher": [teacher]}
    for seed in args.seeds:
        for method in args.methods:
            extra = [f"seed={seed}", *s_ep, *(h_ep if method == "fitnet" else []),
                     *args.student_set]
            if method != "backprop":
                extra.append(f"teacher.weights={teacher}")
            dirs.setdefault(method, []).append(
                go(f"mnist-{method}.yaml", "distill", f"{method}-s{seed}", extra))
    elapsed = time.perf_counter() - t0
    preamble = table4(dirs) + "\n\n" + "\n".join(provenance(argv, elapsed))
    all_dirs = [d for ds in dirs.values() for d in ds]
    path = report(all_dirs, out, title="MNIST, Table 4 of Romero et al. (2015)",
                  preamble=preamble)
    print(f"wrote {path}")
    return path


def table4(dirs: dict[str, list[Path]]) -> str:
    """Our final test error (the weights each run ends with, mean ± std over seeds) next
    to the paper's."""
    lines = ["## Table 4", "",
             "| algorithm | parameters | test error (ours, final model) | seeds "
             "| test error (paper) | parameters (paper) |", "|---|---:|---:|---|---:|---:|"]
    for key, paths in dirs.items():
        runs = [load_run(p) for p in paths]
        done, stalled = split_stalled(runs)  # a run at chance is a failure, not a number
        if done:
            m, s, n = mean_std([r.summary["test_error"] for r in done])
            ours = f"{100 * m:.2f}%" + (f" ± {100 * s:.2f} (n={n})" if n > 1 else " (n=1)")
        else:
            ours = "- (not finished)" if not stalled else "- (none learned)"
        ours += stalled_note(stalled)
        params = f"{done[0].summary['params']:,}" if done else "-"
        seeds = ", ".join(str(r.config.get("seed")) for r in done) or "-"
        err, p_params = PAPER[key]
        lines.append(f"| {LABELS[key]} | {params} | {ours} | {seeds} | {err:.2f}% "
                     f"| {p_params} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
