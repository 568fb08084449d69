"""Shared by the reproduction drivers: run-or-resume one run, and a hardware line."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path

import torch

from fitnets.config import make_config
from fitnets.run import config_for_resume, run

# KD alone for as many epochs as both stages of hints + KD (the student epochs + the hint
# epochs), with the same lambda schedule: the control for the hint stage's extra epochs
CONTROL = "kd-long"
BANKED = ("kd", CONTROL)  # the runs --logits-bank gives a disk bank of the teacher's logits


def control_line(per_seed) -> list[str]:
    """The paired count of the control: over the seeds (each a dict method -> accuracy, None
    for a run that stalled) where hints + KD and kd-long both learned, how often hints + KD
    beat kd-long, and kd-long beat KD where KD learned too. Empty without such a pair."""
    pairs = [v for v in per_seed if v.get("fitnet") is not None and v.get(CONTROL) is not None]
    if not pairs:
        return []
    kd = [v for v in pairs if v.get("kd") is not None]
    return ["", "The control for the hint stage's extra epochs (kd-long: KD trained as many "
            f"epochs as both stages of hints + KD): hints + KD above kd-long in "
            f"{sum(v['fitnet'] > v[CONTROL] for v in pairs)} of {len(pairs)} seed(s)"
            + (f"; kd-long above KD in {sum(v[CONTROL] > v['kd'] for v in kd)} of {len(kd)}"
               if kd else "") + "."]


def add_logits_bank_option(p) -> None:
    """--logits-bank: one disk bank of the teacher's logits shared by the runs' KD stages."""
    p.add_argument("--logits-bank", action="store_true",
                   help="the KD runs (kd, kd-long) run first, build (the first of them) and "
                        "read one bank of the teacher's logits for every view on disk "
                        "(perf.teacher_cache=disk); the hints + KD runs' KD stages read it too "
                        "(auto), their hint stages run the teacher inline: a bank of every view "
                        "of a hint layer is large (the fast teacher's block2 at 50 views of 45k "
                        "images: 54 GB in bf16, 108 GB in fp32). The logits bank costs 50 "
                        "teacher forwards an image, about 5 KD runs of 10 epochs: it pays from "
                        "about the sixth KD stage sharing it")


def logits_bank(args, method: str) -> list[str]:
    """The override --logits-bank gives ``method``'s run: a disk bank for the KD runs."""
    return ["perf.teacher_cache=disk"] if args.logits_bank and method in BANKED else []


def run_order(args, methods: list[str]) -> list[str]:
    """The order to run ``methods`` in: as given, with --logits-bank the KD runs first, so
    that a bank one of them builds is there for the hints + KD runs' KD stages."""
    return sorted(methods, key=lambda m: args.logits_bank and m not in BANKED)


def add_run_options(p) -> None:
    """The options every driver shares: device, resume, extra overrides, quiet."""
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--resume", action="store_true",
                   help="skip finished runs, continue killed ones from their checkpoints")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra config overrides for every run, e.g. data.root=/data")
    p.add_argument("--quiet", action="store_true", help="no per-epoch output")


def add_role_options(p) -> None:
    """--teacher-set / --student-set: overrides for the teacher run or the student runs only."""
    p.add_argument("--teacher-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra overrides for the teacher run only")
    p.add_argument("--student-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra overrides for the student runs only")


def epochs(key: str, value: int | None) -> list[str]:
    """``[key=value]``, or nothing when an epochs option was not given (the recipe's)."""
    return [f"{key}={value}"] if value is not None else []


def run_once(recipe: str | None, command: str, out: Path, overrides: list[str],
             resume: bool, device: str, verbose: bool) -> Path:
    """Run ``recipe`` into ``out``; with ``resume`` a finished run (summary.json) is skipped
    and a killed one continues from its last checkpoint."""
    if resume and (out / "summary.json").is_file():
        print(f"skip {out}: finished")
        return out
    if resume and (out / "config.yaml").is_file():
        print(f"resume {out}")
        run(config_for_resume(out, [f"device={device}"]), command, out, resume=True,
            verbose=verbose)
        return out
    print(f"run {out}")
    cfg = make_config(recipe, [*overrides, f"device={device}", f"out={out}"])
    run(cfg, command, out, verbose=verbose)
    return out


def recipe_runner(args, out: Path, common: list[str], recipes: Path):
    """``go(recipe, command, name, extra)``: run ``recipes/recipe`` into ``out/name`` with the
    overrides ``common + extra`` and the driver's --resume, --device and --quiet."""

    def go(recipe: str, command: str, name: str, extra: list[str]) -> Path:
        return run_once(str(recipes / recipe), command, out / name, [*common, *extra],
                        args.resume, args.device, not args.quiet)

    return go


def teacher_run(given: Path | None, train) -> Path:
    """``--teacher DIR`` when given (a finished run), else the run ``train()`` makes."""
    if given is None:
        return train()
    if not (Path(given) / "summary.json").is_file():
        raise SystemExit(f"--teacher {given}: not a finished run (no summary.json)")
    return Path(given)


def hardware() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")
    return (f"{cpu}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads){gpu}; "
            f"torch {torch.__version__}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def provenance(argv: list[str] | None, elapsed: float) -> list[str]:
    """The report lines that say how its figures were made: command, hardware, time."""
    return [f"Command: `{command_line(argv)}`", "", f"Hardware: {hardware()}", "",
            f"Wall-clock time of this invocation: {elapsed:.1f}s "
            "(runs skipped by --resume not counted).", ""]


def command_line(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", sys.argv[0] if argv is None else "benchmarks/<script>", *args])


def paper_order(v: dict[str, float], lower_is_better: bool = False) -> str:
    """The order column of a per-seed table: whether one seed's hints + KD ("fitnet") beat
    its KD and its KD beat its back-propagation, as in the paper; "-" while a method is
    missing. Accuracies by default; lower_is_better for errors and perplexities."""
    if not all(m in v for m in ("backprop", "kd", "fitnet")):
        return "-"
    sign = "<" if lower_is_better else ">"
    return (f"hints + KD {sign} KD {sign} back-propagation" if in_paper_order(v, lower_is_better)
            else "not the paper's order")


def in_paper_order(v: dict[str, float], lower_is_better: bool = False) -> bool:
    """Whether hints + KD beat KD and KD beat back-propagation in ``v`` (all three present)."""
    b, k, f = (v[m] if lower_is_better else -v[m] for m in ("backprop", "kd", "fitnet"))
    return f < k < b
