"""Transformer hints on CIFAR-10 (issue 17): a thin, deep ViT student trained by
back-propagation, by KD and by hints + KD (FitNet) from a wider, shallower ViT teacher (or a
ResNet teacher, ``--teacher-model resnet20``), one table of test errors.

    export FITNETS_DATA=/path/to/datasets   # cifar-10 (pickles, or the JPEG zip)
    python benchmarks/vit_cifar.py --out runs/vit-cifar --seeds 0

A short CPU run takes the small presets on a subset (``--train-limit``); on a GPU give the
recipes' own models and epochs (``--teacher-model vit_teacher --student-model vit_student``).
Runs go into ``--out/{teacher,backprop-s0,kd-s0,fitnet-s0}``; ``--resume`` skips finished ones.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_run_options, provenance, recipe_runner  # noqa: E402

from fitnets.models import build_model, count_mults  # noqa: E402
from fitnets.report import load_run, mean_std, report, split_stalled, stalled_note  # noqa: E402

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
METHODS = ("backprop", "kd", "fitnet")
LABELS = {"teacher": "teacher", "backprop": "student, back-propagation",
          "kd": "student, KD", "fitnet": "student, hints + KD (FitNet)"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/vit-cifar")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--teacher-model", default="vit_teacher_small")
    p.add_argument("--student-model", default="vit_student_small")
    p.add_argument("--teacher", type=Path, help="reuse this finished teacher run")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--epochs-teacher", type=int, default=10)
    p.add_argument("--epochs-student", type=int, default=10)
    p.add_argument("--hint-epochs", type=int, default=3)
    p.add_argument("--train-limit", type=int, default=10000, help="0: all 50k")
    p.add_argument("--val-size", type=int, default=2000)
    add_run_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse(argv)
    out = Path(args.out)
    t0 = time.perf_counter()
    common = [f"data.train_limit={args.train_limit}", f"data.val_size={args.val_size}",
              *args.set]

    go = recipe_runner(args, out, common, RECIPES)

    if args.teacher is not None:
        teacher = args.teacher
    else:
        teacher = go("cifar10-vit-teacher.yaml", "train", "teacher",
                     [f"model.name={args.teacher_model}", f"seed={args.seeds[0]}",
                      f"train.epochs={args.epochs_teacher}"])
    dirs = {"teacher": [teacher]}
    for seed in args.seeds:
        for method in args.methods:
            extra = [f"method={method}", f"seed={seed}", f"student.name={args.student_model}",
                     f"teacher.name={args.teacher_model}", f"teacher.weights={teacher}",
                     f"train.epochs={args.epochs_student}",
                     f"hints.stage.epochs={args.hint_epochs}"]
            dirs.setdefault(method, []).append(
                go("cifar10-vit-fitnet.yaml", "distill", f"{method}-s{seed}", extra))
    elapsed = time.perf_counter() - t0
    preamble = table(dirs, args) + "\n\n" + "\n".join(provenance(argv, elapsed))
    path = report([d for ds in dirs.values() for d in ds], out,
                  title="CIFAR-10, ViT student from a ViT teacher (token hints)",
                  preamble=preamble)
    print(f"wrote {path}")
    return path


def table(dirs: dict[str, list[Path]], args) -> str:
    mults = {k: count_mults(build_model(m), (3, 32, 32))
             for k, m in (("teacher", args.teacher_model), ("student", args.student_model))}
    lines = ["| network | parameters | mults/image | test error (final model) | seeds |",
             "|---|---:|---:|---:|---|"]
    for key, paths in dirs.items():
        done, stalled = split_stalled(list(map(load_run, paths)))
        if not done:
            lines.append(f"| {LABELS[key]} | - | - | (none finished and learned)"
                         f"{stalled_note(stalled)} | - |")
            continue
        m, s, n = mean_std([r.summary["test_error"] for r in done])
        err = f"{100 * m:.2f}%" + (f" ± {100 * s:.2f} (n={n})" if n > 1 else "")
        err += stalled_note(stalled)
        who = "teacher" if key == "teacher" else "student"
        seeds = ", ".join(str(r.config.get("seed")) for r in done)
        lines.append(f"| {LABELS[key]} ({done[0].summary['model']}) | "
                     f"{done[0].summary['params']:,} | {mults[who] / 1e6:.1f}M | {err} | {seeds} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
