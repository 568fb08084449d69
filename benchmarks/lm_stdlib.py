"""Hints for a thinner, deeper language model on text nobody here wrote (issue 33).

    python benchmarks/lm_stdlib.py [--seeds 0 1 2] [--resume] [--teacher DIR]
        [--out runs/text-stdlib] [--results benchmarks/results/text-stdlib]

The corpus is Python's own standard library (``tools/stdlib_corpus.py``: top-level .py files
of at most 40 KB in name order, up to 560 KB: 41 files), byte-level tokens, split by file.
A GPT teacher of width 256 and 4 blocks (``recipes/text-gpt-teacher.yaml``), then a student of
width 128 and 8 blocks (``recipes/text-gpt-fitnet.yaml``) by back-propagation, KD and hints +
KD, one run per method and seed, in that order. A run that ends at chance (the stall guard's
verdict: its perplexity no better than the training split's unigram one) is listed as a
failure, never averaged. Writes RESULTS/README.md (the table, per-seed figures, the commands
and the hardware line) and each run's config.yaml, metrics.jsonl and summary.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import add_run_options, paper_order, provenance, recipe_runner, teacher_run  # noqa: E402

from fitnets.config import make_config  # noqa: E402
from fitnets.data.text import stdlib_corpus  # noqa: E402
from fitnets.report import load_run, mean_std, split_stalled, stalled_note  # noqa: E402

RECIPES = Path(__file__).parents[1] / "recipes"
METHODS = {"backprop": "back-propagation", "kd": "KD", "fitnet": "hints + KD"}
CORPUS_BYTES = 560_000


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/text-stdlib", help="directory of all runs")
    p.add_argument("--results", default="benchmarks/results/text-stdlib",
                   help="where the table and the run files are written")
    p.add_argument("--corpus", default="corpora/stdlib", help="made here when missing")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--teacher", type=Path, help="reuse this finished teacher run directory")
    add_run_options(p)
    return p.parse_args(argv)


def tokens_per_s(run_dir: Path) -> float | None:
    """Training tokens a second over the run's classifier epochs (their times include the
    evaluations, so this is the loop's rate from below)."""
    cfg = make_config(run_dir / "config.yaml")
    from fitnets.search.probe import data_facts

    blocks = data_facts(cfg.data).train
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("kind") == "classifier"]
    seconds = sum(r["time"] for r in rows)
    return blocks * cfg.data.block_size * len(rows) / seconds if seconds else None


def main(argv=None) -> Path:
    args = parse(argv)
    out, results = Path(args.out), Path(args.results)
    t0 = time.perf_counter()
    corpus = Path(args.corpus)
    if not corpus.is_dir():
        stdlib_corpus(corpus, CORPUS_BYTES)
        print(f"made the corpus {corpus}")
    go = recipe_runner(args, out, [f"data.path={corpus}", *args.set], RECIPES)
    teacher = teacher_run(args.teacher, lambda: go("text-gpt-teacher.yaml", "train",
                                                   "teacher", []))
    dirs: dict[str, list[Path]] = {"teacher": [teacher]}
    for seed in args.seeds:
        for m in args.methods:
            dirs.setdefault(m, []).append(go(
                "text-gpt-fitnet.yaml", "distill", f"{m}-s{seed}",
                [f"method={m}", f"seed={seed}", f"teacher.weights={teacher}"]))
    elapsed = time.perf_counter() - t0
    results.mkdir(parents=True, exist_ok=True)
    for paths in dirs.values():
        for p in paths:
            keep = results / p.name
            keep.mkdir(exist_ok=True)
            for f in ("config.yaml", "metrics.jsonl", "summary.json"):
                if (p / f).is_file():
                    shutil.copyfile(p / f, keep / f)
    text = table(dirs) + "\n\n" + "\n".join(provenance(argv, elapsed))
    (results / "README.md").write_text("# Language-model hints on the standard library "
                                       "(issue 33)\n\n" + text + "\n")
    print(text)
    return results / "README.md"


def table(dirs: dict[str, list[Path]]) -> str:
    t = load_run(dirs["teacher"][0])
    unigram = t.summary["unigram_ppl"]
    lines = [f"Teacher (width 256, 4 blocks, {t.summary['params']:,} parameters): test "
             f"perplexity {t.summary['test_ppl']:.3f}, next-token accuracy "
             f"{100 * t.summary['test_acc']:.2f}%. Unigram perplexity of the training split "
             f"(chance): {unigram:.2f}.", "",
             "| student (width 128, 8 blocks) | parameters | test perplexity | next-token "
             "accuracy | seeds | tokens/s (training) |", "|---|---:|---:|---:|---|---:|"]
    per_seed = {}
    for key, label in METHODS.items():
        if key not in dirs:
            continue
        runs = [load_run(p) for p in dirs[key]]
        done, stalled = split_stalled(runs)
        if done:
            m, s, n = mean_std([r.summary["test_ppl"] for r in done])
            a, sa, _ = mean_std([r.summary["test_acc"] for r in done])
            ppl = f"{m:.3f} ± {s:.3f} (n={n})" if n > 1 else f"{m:.3f} (n=1)"
            acc = f"{100 * a:.2f}% ± {100 * sa:.2f}" if n > 1 else f"{100 * a:.2f}%"
            speeds = [tokens_per_s(p) for p in dirs[key]]
            speed = f"{sum(speeds) / len(speeds):,.0f}" if all(speeds) else "-"
        else:
            ppl, acc, speed = "- (none learned)" if stalled else "- (not finished)", "-", "-"
        seeds = ", ".join(str(r.config.get("seed")) for r in done) or "-"
        params = f"{done[0].summary['params']:,}" if done else "-"
        lines.append(f"| {label} | {params} | {ppl}{stalled_note(stalled)} | {acc} | {seeds} "
                     f"| {speed} |")
        for r in done:
            per_seed.setdefault(r.config.get("seed"), {})[key] = r.summary["test_ppl"]
    lines += ["", "Test perplexity by seed:", "",
              "| seed | " + " | ".join(METHODS[k] for k in METHODS if k in dirs) + " | order |",
              "|---|" + "---:|" * sum(k in dirs for k in METHODS) + "---|"]
    for seed, v in sorted(per_seed.items()):
        lines.append(f"| {seed} | " + " | ".join(f"{v[k]:.3f}" if k in v else "-"
                                                 for k in METHODS if k in dirs)
                     + f" | {paper_order(v, lower_is_better=True)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
