"""How soft is a trained teacher's output? KD can only transfer what the soft targets hold
beyond the label; a teacher that fits its training set perfectly gives near one-hot targets.

    python benchmarks/soft_targets.py RUN_DIR [RUN_DIR ...] [--tau 3] [--split train]

For each finished ``fitnets train`` run: on its training (or validation / test) images, the
teacher's accuracy, and of P_T^tau (the softmax of logits / tau, what KD trains towards):
the mean and median top probability, the mean entropy in nats, and the mean probability
left for the non-label classes. Prints a Markdown table (and writes it with ``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import hardware  # noqa: E402

from fitnets.data.memory import Data  # noqa: E402
from fitnets.data.prepare import prepare  # noqa: E402
from fitnets.errors import FitnetsError  # noqa: E402
from fitnets.run import config_for_resume, load_teacher  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="finished `fitnets train` run directories")
    p.add_argument("--tau", type=float, default=3.0, help="KD temperature (the recipes': 3)")
    p.add_argument("--split", choices=["train", "val", "test"], default="train",
                   help="which images (KD trains on the training split)")
    p.add_argument("--out", help="also write the table to this Markdown file")
    return p.parse_args(argv)


@torch.no_grad()
def stats(run_dir: Path, tau: float, split: str) -> dict:
    if not (run_dir / "summary.json").is_file():
        raise FitnetsError(f"'{run_dir}' is not a finished run (no summary.json).")
    cfg = config_for_resume(run_dir, ["device=cpu"])
    device = torch.device("cpu")
    prepared = prepare(cfg.data, device)
    if not isinstance(prepared.data, Data):
        raise FitnetsError(f"run '{run_dir}' streams its data from files; this script reads "
                           "in-memory datasets only (set data.mode=memory if it fits).")
    arrays = getattr(prepared.data, split, None)
    if arrays is None:
        raise FitnetsError(f"run '{run_dir}' has no {split} split (data.val_size=0?).")
    teacher = load_teacher(dataclasses.replace(cfg.model, weights=str(run_dir)), prepared,
                           device)
    top, ent, rest, correct = [], [], [], 0
    for batch in prepared.data.eval_batches(arrays):
        logits = teacher(batch.x).float()
        p = torch.softmax(logits / tau, dim=1)
        top.append(p.max(dim=1).values)
        ent.append(-(p * p.clamp_min(1e-30).log()).sum(dim=1))
        rest.append(1 - p.gather(1, batch.y.view(-1, 1)).squeeze(1))
        correct += int((logits.argmax(1) == batch.y).sum())
    top, ent, rest = torch.cat(top), torch.cat(ent), torch.cat(rest)
    return {"run": str(run_dir), "n": len(top), "acc": correct / len(top),
            "top_mean": float(top.mean()), "top_median": float(top.median()),
            "entropy": float(ent.mean()), "non_label": float(rest.mean())}


def table(rows: list[dict], tau: float, split: str) -> str:
    lines = [f"Soft targets P_T^tau at tau {tau:g}, {split} images ({hardware()})", "",
             "| teacher run | images | accuracy | top prob. mean | top prob. median | "
             "entropy (nats) | mass off the label |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['n']:,} | {100 * r['acc']:.2f}% | {r['top_mean']:.4f} "
                     f"| {r['top_median']:.4f} | {r['entropy']:.4f} | {r['non_label']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    args = parse(argv)
    text = table([stats(Path(r), args.tau, args.split) for r in args.runs], args.tau,
                 args.split)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return text


if __name__ == "__main__":
    try:
        main()
    except FitnetsError as e:
        sys.exit(f"error: {e}")
