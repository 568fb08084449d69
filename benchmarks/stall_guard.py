"""When did recorded runs leave chance, counted in optimiser steps: the evidence behind the
stall guard's ``MIN_STEPS`` and ``MIN_FRACTION`` (``fitnets/stall.py``, issue 31).

    python benchmarks/stall_guard.py benchmarks/results/authors-code \\
        benchmarks/results/mnist-table4-authors /tmp/demo [--data-root $FITNETS_DATA]

For every run directory below the given folders (one holding ``metrics.jsonl`` and
``config.yaml``) and every classifier stage in it: its steps per epoch (the training
split's size over the batch size, from the dataset as the run's config loads it), the stage's
steps, the epochs its held-out accuracy (validation, else test: what the guard watches) spent
within ``stall.MARGIN`` of chance from its start, the step by which it left chance, whether
it ended at chance, and whether ``stall.ready`` would have let the guard judge it while it
was still at chance (a run that later learned must never be judged so). Prints a markdown
table. Steps are counted at the epochs' ends, where the guard runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import yaml

from fitnets import stall
from fitnets.data.load import load_dataset

_SPLITS: dict[tuple, tuple[int, float, float]] = {}


def split_facts(data: dict, root: str | None) -> tuple[int, float, float]:
    """(training images, chance on the validation split, chance on the test split)."""
    key = (data["name"], data.get("val_size"), data.get("train_limit", 0),
           data.get("test_limit", 0), data.get("path"))
    if key not in _SPLITS:
        ds = load_dataset(data["name"], root or data.get("root"), val_size=data.get("val_size"),
                          train_limit=data.get("train_limit", 0),
                          test_limit=data.get("test_limit", 0), download=False,
                          path=data.get("path"))
        k = ds.num_classes

        def chance(split) -> float:
            if split is None:
                return math.nan
            return stall.chance_level([float((split.y == c).sum()) for c in range(k)])
        _SPLITS[key] = (len(ds.train), chance(ds.val), chance(ds.test))
    return _SPLITS[key]


def stages(run_dir: Path, root: str | None) -> list[dict]:
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
               if line.strip()]
    n, val_chance, test_chance = split_facts(cfg["data"], root)
    per_epoch = -(-n // cfg["data"]["batch_size"])
    out = []
    for name in dict.fromkeys(r["stage"] for r in records if r.get("kind") == "classifier"):
        rs = [r for r in records if r["stage"] == name]
        watched = "val_acc" if "val_acc" in rs[0] else "test_acc"
        chance = val_chance if watched == "val_acc" else test_chance
        accs = [r[watched] for r in rs]
        at = [a <= chance + stall.MARGIN for a in accs]
        epochs = cfg["train"]["epochs"]
        total = epochs * per_epoch
        flat = next((i for i, a in enumerate(at) if not a), len(at))  # epochs at chance first
        left = flat + 1 if flat < len(at) else None
        # judged while still at chance: ready() at some epoch end inside the flat start
        judged = next((e for e in range(1, flat + 1) if stall.ready(e * per_epoch, total)), None)
        out.append({"run": str(run_dir), "stage": name, "per_epoch": per_epoch,
                    "epochs": f"{len(rs)}/{epochs}", "total": total, "watched": watched,
                    "chance": chance, "flat_epochs": flat,
                    "left_step": None if left is None else left * per_epoch, "left_epoch": left,
                    "ends_at_chance": at[-1], "judged_at": judged,
                    "accs": ", ".join(f"{100 * a:.1f}" for a in accs)})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--data-root", default=None)
    args = p.parse_args(argv)
    rows = []
    for folder in args.folders:
        for m in sorted(folder.rglob("metrics.jsonl")):
            if (m.parent / "config.yaml").is_file():
                rows.extend(stages(m.parent, args.data_root))
    print(f"MIN_STEPS={stall.MIN_STEPS}, MIN_FRACTION={stall.MIN_FRACTION}, "
          f"MARGIN={stall.MARGIN}\n")
    print("| run | stage | steps/epoch | epochs run/set (stage steps) | chance (split) "
          "| epochs at chance from the start | left chance by step (epoch) | ends at chance "
          "| guard may judge from step | judged while at chance | held-out acc. by epoch (%) |")
    print("|---|---|---:|---|---:|---:|---|---|---:|---|---|")
    for r in rows:
        first = next(s for s in range(r["total"] + 1) if stall.ready(s, r["total"]))
        left = "never" if r["left_step"] is None else f"{r['left_step']} ({r['left_epoch']})"
        judged = "-" if r["judged_at"] is None else f"epoch {r['judged_at']}"
        print(f"| {r['run']} | {r['stage']} | {r['per_epoch']} | {r['epochs']} ({r['total']}) "
              f"| {100 * r['chance']:.1f}% ({r['watched'][:-4]}) | {r['flat_epochs']} | {left} "
              f"| {'yes' if r['ends_at_chance'] else 'no'} | {first} | {judged} | {r['accs']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
