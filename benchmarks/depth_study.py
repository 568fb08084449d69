"""The paper's depth study, scaled down: CIFAR-10 students of a fixed parameter budget
(about 30K; about 107K with --budgets 30000 107000) at several depths, each trained by
back-propagation, KD and hints (FitNet), from one teacher.

One command (hours on a GPU; the paper's teacher is `--teacher cifar_teacher`):

    python benchmarks/depth_study.py --out runs/depth --depths 3 5 7 9 --seeds 0

At full scale from the fast teacher (issue 32: all 45k/5k/10k images, the schedule of
benchmarks/cifar10_fullscale.py, lambda annealed from 4 to 1 over the 10 KD epochs as there
(the defaults, from epoch 5 to 150, would hold it near 4 throughout), the fast recipes'
2-pixel translations and alternating flips: 50 views an image, so that the KD stages of all
the runs read one bank of the teacher's logits on disk, built by the first KD run: about 30
minutes on 2 CPU cores, benchmarks/results/teacher-bank/; the hint stages run the teacher
inline, as perf.teacher_cache=disk for every run would also bank block2's maps: 54 GB;
the teacher is the one committed with its weights, 90.16%: the README's full-scale tables
used a bf16 seed-0 teacher at 90.37%, whose weights were lost):

    python benchmarks/depth_study.py --out runs/depth-full \
        --teacher-run benchmarks/results/cifar10-teacher-fast/fp32-avx2-s0 \
        --budgets 30000 107000 --seeds 0 1 2 --epochs-student 10 --hint-epochs 3 --resume \
        --logits-bank --set data.val_size=5000 data.augment_pad=2 \
        data.augment_flip=alternate data.batch_size=128 train.optim.schedule=cosine \
        hints.stage.optim.schedule=cosine kd.lambda_start=0 kd.lambda_saturate=10 \
        kd.lambda_final=1

Smoke run (minutes on a CPU):

    python benchmarks/depth_study.py --out runs/depth-smoke --train-limit 500 \\
        --test-limit 500 --epochs-teacher 1 --epochs-student 1 --hint-epochs 1 --depths 3 5

The students are ``fitnets.models.thin:thin_cifar_d<depth>[_107k]`` (conv3x3-BN-ReLU, width
chosen for the budget, guided layer = the middle conv); ``--no-batchnorm``: the same without
BatchNorm (``..._nobn``: conv3x3 + bias, ReLU, He-initialised; run names ``nobn-d9-kd-s0``),
the ablation that asks whether hints help deep students that normalisation does not already
make easy to train, as the paper's maxout students were not; the teacher's hint layer is its
default (the middle stage of a ResNet). Every run gets its own directory under ``--out``;
``--resume`` skips finished runs and continues killed ones; ``--report-only`` (the same
command) writes the report of the runs finished so far and runs nothing. ``--out/report.md`` holds a
depth x method table per budget, ``depth.png`` (test accuracy vs depth, a panel per
budget), then the full report.

``--methods`` picks which of the three to run (default all) and may add ``kd-long``, the
control for the hint stage's extra epochs: KD trained for ``--epochs-student`` +
``--hint-epochs`` epochs (run names ``d9-kd-long-s0``), as many as a FitNet run's two stages
together, every layer training in all of them where the hint stage trains only the layers
below the guided one. Where hints + KD beats KD but not kd-long, its gain is the extra
epochs, not the hints. The KD lambda schedule and cosine decay then span the longer run
(with ``kd.lambda_saturate=10``, lambda reaches its final value at epoch 10 and stays).
The report's tables have a column per method run, and the per-seed table counts how often
hints + KD beat kd-long. For the BatchNorm ablation's deepest students, the full-scale
command above with ``--out runs/depth-nobn --no-batchnorm --budgets 30000 --depths 9
--methods kd-long`` runs the control, and the same with ``--methods backprop kd fitnet
kd-long --report-only`` reports it beside the three.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    CONTROL,
    add_logits_bank_option,
    add_run_options,
    control_line,
    in_paper_order,
    logits_bank,
    paper_order,
    provenance,
    run_once,
    run_order,
    teacher_run,
)

from fitnets.models.thin import BUDGETS, builder_name  # noqa: E402
from fitnets.report import load_run, mean_std, pyplot, report, split_stalled  # noqa: E402

METHODS = ("backprop", "kd", "fitnet")
# data.name=cifar10 reads the canonical pickles when present, else cifar10-jpeg.zip
DATA_NOTE = ("the canonical pickles if present, else cifar10-jpeg.zip: lossy JPEG, "
             "quality ~75")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/depth", help="directory of all runs + report")
    p.add_argument("--depths", type=int, nargs="+", default=[3, 5, 7, 9],
                   choices=[3, 5, 7, 9, 11], help="student depths (conv layers)")
    p.add_argument("--budgets", type=int, nargs="+", default=[30_000], choices=BUDGETS,
                   help="student parameter budgets (the paper's ~30K; ~107K, FitNet 2's size)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="student seeds")
    p.add_argument("--teacher", default="resnet20",
                   help="built-in teacher model (smaller than the paper's: resnet20; "
                        "the paper's maxout net: cifar_teacher)")
    p.add_argument("--teacher-run", type=Path, default=None,
                   help="a finished teacher run directory to distil from instead of training "
                        "one (its model name is read from its config.yaml), e.g. the fast "
                        "teacher committed in benchmarks/results/cifar10-teacher-fast/"
                        "fp32-avx2-s0 (90.16%%)")
    p.add_argument("--teacher-pool-rounding", choices=["floor", "ceil"], default=None,
                   help="pooling of a maxout teacher (cifar_teacher): floor (our default) or "
                        "ceil (cuda-convnet's, as the authors ran it and the paper recipes "
                        "use: hint 192x7x7 instead of 192x6x6); benchmarks/results/"
                        "authors-code/README.md item 2")
    p.add_argument("--methods", nargs="+", default=list(METHODS),
                   choices=[*METHODS, CONTROL],
                   help="the methods to run and report (default the paper's three); kd-long: "
                        "KD for --epochs-student + --hint-epochs epochs, the control for the "
                        "hint stage's extra epochs")
    p.add_argument("--epochs-teacher", type=int, default=30, help="teacher epochs")
    p.add_argument("--epochs-student", type=int, default=30, help="student (stage 2) epochs")
    p.add_argument("--hint-epochs", type=int, default=10, help="FitNet stage-1 epochs")
    p.add_argument("--train-limit", type=int, default=0, help="first N training images (0: all)")
    p.add_argument("--test-limit", type=int, default=0, help="first N test images (0: all)")
    p.add_argument("--lr", type=float, default=0.001, help="Adam learning rate of every stage")
    add_logits_bank_option(p)
    p.add_argument("--no-batchnorm", action="store_true",
                   help="students without BatchNorm (thin_cifar_d<depth>[_107k]_nobn: "
                        "conv + bias, ReLU, He init), run names nobn-...")
    p.add_argument("--report-only", action="store_true",
                   help="write report.md and depth.png from the runs of this command that "
                        "have finished in --out, running nothing: a long study's figures so "
                        "far (unfinished runs show as '-' and are listed)")
    add_run_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse(argv)
    out = Path(args.out)
    t0 = time.perf_counter()
    base = ["data.name=cifar10", "data.preprocess=standardize", "data.augment_pad=4",
            "data.augment_flip=true", f"data.train_limit={args.train_limit}",
            f"data.test_limit={args.test_limit}", "train.optim.name=adam",
            f"train.optim.lr={args.lr}", "hints.stage.optim.name=adam",
            f"hints.stage.optim.lr={args.lr}", *args.set]

    missing: list[str] = []  # --report-only: the runs not finished yet

    def go(command: str, name: str, extra: list[str]) -> Path | None:
        if args.report_only:
            if (out / name / "summary.json").is_file():
                return out / name
            missing.append(name)
            return None
        return run_once(None, command, out / name, [*base, *extra], args.resume, args.device,
                        not args.quiet)

    pool = [] if args.teacher_pool_rounding is None else [args.teacher_pool_rounding]

    def train_teacher() -> Path:
        done = go("train", "teacher", [f"model.name={args.teacher}", f"seed={args.seeds[0]}",
                                       f"train.epochs={args.epochs_teacher}",
                                       *(f"model.pool_rounding={r}" for r in pool)])
        if done is None:  # --report-only, and no finished teacher in --out
            raise SystemExit(f"--report-only: {out / 'teacher'} is not a finished run; "
                             "name the study's teacher with --teacher-run")
        return done

    teacher = teacher_run(args.teacher_run, train_teacher)
    if args.teacher_run is not None:  # its own network, and its pooling if it says one
        model = yaml.safe_load((teacher / "config.yaml").read_text())["model"]
        args.teacher = model["name"]
        pool = [model["pool_rounding"]] if model.get("pool_rounding") else []
    dirs: dict[tuple[int, int, str], list[Path]] = {}
    bn = not args.no_batchnorm
    methods = [m for m in (*METHODS, CONTROL) if m in args.methods]  # the tables' order
    order = run_order(args, methods)  # under --logits-bank the KD runs first
    for budget in args.budgets:
        # run names: d3-..., 107k-d3-..., without BatchNorm nobn-d3-..., nobn-107k-d3-...
        tag = ("" if bn else "nobn-") + ("" if budget == 30_000 else f"{budget // 1000}k-")
        for depth in args.depths:
            for seed in args.seeds:
                for method in order:
                    long = method == CONTROL  # KD, with the hint stage's epochs added
                    epochs = args.epochs_student + (args.hint_epochs if long else 0)
                    extra = [f"method={'kd' if long else method}", f"seed={seed}",
                             f"student.name=fitnets.models.thin:{builder_name(depth, budget, bn)}",
                             f"train.epochs={epochs}",
                             f"hints.stage.epochs={args.hint_epochs}",
                             f"teacher.name={args.teacher}", f"teacher.weights={teacher}",
                             *(f"teacher.pool_rounding={r}" for r in pool),
                             *logits_bank(args, method)]
                    done = go("distill", f"{tag}d{depth}-{method}-s{seed}", extra)
                    dirs.setdefault((budget, depth, method), []).extend([done] if done else [])
    elapsed = time.perf_counter() - t0
    split = {key: split_stalled([load_run(p) for p in ps]) for key, ps in dirs.items()}
    # runs that stalled at chance are failures (report.md's table names them), not averaged
    accs = {key: [r.summary["test_acc"] for r in learned] for key, (learned, _) in split.items()}
    per_seed: dict[tuple[int, int, int], dict[str, float | None]] = {}
    for (budget, depth, method), (learned, stalled) in split.items():
        for r, acc in [*((r, r.summary["test_acc"]) for r in learned),
                       *((r, None) for r in stalled)]:
            per_seed.setdefault((budget, depth, r.config.get("seed")), {})[method] = acc
    students = "" if bn else " without BatchNorm"
    plot_depth(accs, args.budgets, args.depths, out / "depth.png", students, methods)
    tables = [*(depth_table(accs, b, args.depths, students, methods) for b in args.budgets),
              seed_table(per_seed, methods)]
    t = load_run(teacher)
    t_acc = t.summary["test_acc"] if t.finished else None
    preamble = "\n".join([
        f"Teacher {t.model}: {'-' if t_acc is None else f'{100 * t_acc:.2f}%'} test accuracy "
        f"(CIFAR-10 from {DATA_NOTE})",
        "", *tables, "", "![depth](depth.png)", "", *provenance(argv, elapsed),
        *([f"Report only: {len(missing)} run(s) of this command not finished yet, left "
           f"out: {', '.join(missing)}.", ""] if missing else [])])
    all_dirs = [teacher, *(p for ps in dirs.values() for p in ps)]
    path = report(all_dirs, out, title=f"Depth study on CIFAR-10 (scaled){students}",
                  preamble=preamble)
    print(f"wrote {path}")
    return path


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    m, s, n = mean_std(values)
    return f"{100 * m:.2f}%" + (f" ± {100 * s:.2f} (n={n})" if n > 1 else "")


def depth_table(accs: dict, budget: int, depths: list[int], students: str = "",
                methods: tuple[str, ...] | list[str] = METHODS) -> str:
    lines = [f"## Test accuracy (final model) by depth, students of ~{budget // 1000}K "
             f"parameters{students}", "", f"CIFAR-10 from {DATA_NOTE}.", "",
             "| depth | " + " | ".join(methods) + " |", "|---:|" + "---:|" * len(methods)]
    for d in depths:
        lines.append(f"| {d} | " + " | ".join(_cell(accs.get((budget, d, m), []))
                                               for m in methods) + " |")
    return "\n".join(lines) + "\n"


def seed_table(per_seed: dict[tuple[int, int, int], dict[str, float | None]],
               methods: tuple[str, ...] | list[str] = METHODS) -> str:
    """Each (budget, depth, seed)'s students side by side, a column per method in
    ``methods`` (None: the run stalled at chance, a failure), whether the paper's three fall
    in its order, and how often each method beat another across the seeds where both
    learned: with a spread between seeds as large as the gaps between methods, these paired
    counts say more than the means. With kd-long (the control for the hint stage's extra
    epochs) a line counts hints + KD against it."""
    lines = ["## Test accuracy by seed (%)", "",
             "| budget | depth | seed | " + " | ".join(methods) + " | order |",
             "|---:|---:|---:|" + "---:|" * len(methods) + "---|"]
    for (budget, depth, seed), v in sorted(per_seed.items()):
        learned = {m: a for m, a in v.items() if a is not None}
        lines.append(f"| ~{budget // 1000}K | {depth} | {seed} | " + " | ".join(
            "-" if m not in v else "stalled" if v[m] is None else f"{100 * v[m]:.2f}"
            for m in methods) + f" | {paper_order(learned)} |")
    full = [v for v in per_seed.values() if all(v.get(m) is not None for m in METHODS)]
    if full:
        def wins(a: str, b: str) -> str:
            return f"{sum(v[a] > v[b] for v in full)} of {len(full)}"
        ordered = sum(in_paper_order(v) for v in full)
        lines += ["", f"Over the {len(full)} (budget, depth, seed) with all three: the "
                  f"paper's order in {ordered} of {len(full)}; "
                  f"hints + KD above KD in {wins('fitnet', 'kd')}, above back-propagation "
                  f"in {wins('fitnet', 'backprop')}; KD above back-propagation in "
                  f"{wins('kd', 'backprop')}."]
    if CONTROL in methods:
        lines += control_line(per_seed.values())
    return "\n".join(lines) + "\n"


def plot_depth(accs: dict, budgets: list[int], depths: list[int], path: Path,
               students: str = "", methods: tuple[str, ...] | list[str] = METHODS) -> None:
    """One panel per budget: test accuracy against depth, a line per method."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(budgets), figsize=(6 * len(budgets), 4), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        for method in methods:
            pts = [(d, *mean_std(accs[(budget, d, method)])[:2]) for d in depths
                   if accs.get((budget, d, method))]
            if pts:
                ds, ms, ss = zip(*pts)
                ax.errorbar(ds, [100 * m for m in ms], yerr=[100 * s for s in ss],
                            marker="o", capsize=3, label=method)
        ax.set_title(f"students of ~{budget // 1000}K parameters{students}")
        ax.set_xlabel("student depth (conv layers)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_xticks(depths)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"CIFAR-10 ({DATA_NOTE})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
