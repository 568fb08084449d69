"""Tables and plots from run directories' files only (``fitnets report RUN_DIR ...``).

A report never loads a checkpoint nor evaluates a network: it reads ``config.yaml``,
``metrics.jsonl`` and, when the run finished, ``summary.json``. A killed run (no summary,
maybe a partial log) is shown with the stage and epoch it reached. The one thing computed
is the multiplication count, by building the config's model and counting (no weights).

A language-model run (data.name=text: its metrics carry perplexities) is reported in
perplexity: validation and test perplexity (exp of the mean token loss; the best epoch is
the one of lowest validation loss, as the run chose it), next-token accuracy, the training
split's unigram perplexity (the chance level: the best model that ignores context), training
tokens/s and multiplications per token. Image classifiers and language models given to one
report get a section each (their tables share no column that means the same).
"""

from __future__ import annotations

import functools
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fitnets.errors import FitnetsError


@dataclass
class RunRecord:
    """What a run directory says about its run."""

    path: Path
    name: str
    config: dict
    records: list[dict]
    summary: dict | None
    command: str  # train | distill | ? (killed before its first epoch)
    method: str
    model: str
    dataset: str
    params: int | None = None
    mults: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def language_model(self) -> bool:
        """A run on text (its next-token metrics carry perplexities)."""
        if self.summary is not None and any(k in self.summary for k in ("test_ppl", "val_ppl",
                                                                        "unigram_ppl")):
            return True
        if any("val_ppl" in r or "test_ppl" in r for r in self.records):
            return True
        return (self.config.get("data") or {}).get("name") == "text"

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def stalled(self) -> str | None:
        """The first stage the stall guard's last verdict marked stalled, and the epoch it
        was given, e.g. "kd epoch 3"; None. The verdict follows the run (a stage that left
        chance is a slow start, not a stall): a finished run's summary.json stages, else each
        stage's last logged epoch."""
        if self.summary is not None:
            hit = next((s for s in self.summary.get("stages", []) if s.get("stalled")), None)
            return None if hit is None else f"{hit['name']} epoch {hit['stalled_epoch']}"
        last: dict[str, dict] = {}
        for r in self.records:
            last[stage_label(r)] = r
        hit = next((r for r in last.values() if r.get("stalled")), None)
        if hit is None:
            return None
        # the epoch the verdict was given: the first of the stage's trailing stalled epochs
        label, epoch = stage_label(hit), hit["epoch"]
        for r in reversed([r for r in self.records if stage_label(r) == label]):
            if not r.get("stalled"):
                break
            epoch = r["epoch"]
        return f"{label} epoch {epoch}"

    @property
    def slow_start(self) -> str | None:
        """Where stages that sat at chance left it, e.g. "backprop left chance at step 92 /
        epoch 4" (a finished run's summary, else its metrics); None."""
        if self.summary is not None:
            hits = [(s["name"], s["left_chance_step"], s["left_chance_epoch"])
                    for s in self.summary.get("stages", []) if s.get("slow_start")]
        else:
            hits = [(stage_label(r), r["left_chance_step"], r["epoch"]) for r in self.records
                    if "left_chance_step" in r]
        return "; ".join(f"{n} left chance at step {s:,} / epoch {e}"
                         for n, s, e in hits) or None

    @property
    def status(self) -> str:
        if self.stalled:
            return (f"STALLED at chance ({self.stalled})" + ("" if self.finished else
                    f", then killed at epoch {self.records[-1]['epoch']}"))
        if self.finished:
            slow = self.slow_start
            return "finished" + (f" (slow start: {slow})" if slow else "")
        if not self.records:
            return "killed before its first epoch"
        last = self.records[-1]
        return f"killed at stage {stage_label(last)} epoch {last['epoch']}"


# --------------------------------------------------------------------------- reading


def stage_label(record: dict) -> str:
    return record["stage"] + (f":{record['pair']}" if "pair" in record else "")


def is_classifier(record: dict) -> bool:
    """Whether a record is from a stage training the whole student (its ``kind``; logs
    written before kinds were recorded: the stages that logged a test accuracy)."""
    return record.get("kind", "classifier" if "test_acc" in record else "hints") == "classifier"


def read_metrics(path: Path) -> list[dict]:
    """The metrics log; a last line cut short by a kill is dropped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in out if isinstance(r, dict) and "stage" in r and "epoch" in r]


def load_run(path: str | Path, name: str | None = None) -> RunRecord:
    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise FitnetsError(f"'{path}' is not a run directory (no config.yaml); pass the "
                           "directories that `fitnets train/distill` wrote.")
    config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    records = read_metrics(path / "metrics.jsonl")
    summary = None
    if (path / "summary.json").is_file():
        summary = json.loads((path / "summary.json").read_text())
    if summary is not None:
        command = summary.get("command", "?")
    elif records:
        command = "train" if records[0]["stage"] == "train" else "distill"
    else:
        command = "?"
    method = "train" if command == "train" else config.get("method", "?")
    model_key = "model" if command == "train" else "student"
    model = (summary or {}).get("model") or config.get(model_key, {}).get("name", "?")
    dataset = (summary or {}).get("dataset") or config.get("data", {}).get("name", "?")
    run = RunRecord(path, name or path.name, config, records, summary, command, method,
                    model, dataset)
    run.params = (summary or {}).get("params")
    run.mults = (summary or {}).get("mults")  # counted by the run (since issue 31)
    if run.language_model and (run.params is None or run.mults is None):
        counted = _count_lm(model, config.get(model_key, {}), config.get("data", {}))
        if counted is not None:
            run.params = run.params if run.params is not None else counted[0]
            run.mults = run.mults if run.mults is not None else counted[1]
    elif run.params is None or run.mults is None:  # an older or unfinished run: rebuild it
        mcfg = config.get(model_key, {})
        counted = _count(model, dataset, mcfg.get("batchnorm", False),
                         tuple(sorted((k, v) for k, v in mcfg.items()
                                      if k in ("pool_rounding", "untied_biases"))))
        if counted is not None:
            run.params = run.params if run.params is not None else counted[0]
            run.mults = run.mults if run.mults is not None else counted[1]
    return run


@functools.cache  # several runs of one model: count once
def _count(model: str, dataset: str, batchnorm: bool,
           maxout: tuple = ()) -> tuple[int, int] | None:
    """(params, multiplications per image) of ``model`` built from its name (and the maxout
    nets' shape options, e.g. ceil pooling); None if it cannot be built here (a user's
    module that is gone, an unknown input shape)."""
    try:
        from fitnets.models import MaxoutOptions, build_model
        from fitnets.models.counting import count_mults, count_params

        net = build_model(model, num_classes=100 if dataset == "cifar100" else 10,
                          batchnorm=bool(batchnorm),
                          maxout=MaxoutOptions(**dict(maxout)) if maxout else None)
        return count_params(net), count_mults(net, tuple(net.input_shape))
    except Exception:  # any failure only means "not known": the report shows "-"
        return None


def _count_lm(model: str, mcfg: dict, data: dict) -> tuple[int, int] | None:
    """(params, multiplications per block) of a killed run's built-in GPT on the byte
    tokenizer (its vocabulary is known without the corpus); None otherwise."""
    if model != "gpt" or data.get("tokenizer", "byte") != "byte":
        return None
    sizes = {k: mcfg[k] for k in ("width", "depth", "heads") if mcfg.get(k) is not None}
    return _count_gpt(tuple(sorted(sizes.items())), int(data.get("block_size") or 128))


@functools.cache
def _count_gpt(sizes: tuple, context: int) -> tuple[int, int] | None:
    try:
        from fitnets.data.text import ByteTokenizer
        from fitnets.models import build_model
        from fitnets.models.counting import count_mults, count_params

        net = build_model("gpt", num_classes=ByteTokenizer.vocab_size,
                          sizes={**dict(sizes), "context": context})
        return count_params(net), count_mults(net, tuple(net.input_shape))
    except Exception:  # only "not known": the report shows "-"
        return None


# --------------------------------------------------------------------------- numbers


def final_stage_records(run: RunRecord) -> list[dict]:
    """The records of the last classifier stage the run reached (empty: none reached)."""
    cls = [r for r in run.records if is_classifier(r)]
    if not cls:
        return []
    last = cls[-1]["stage"]
    return [r for r in cls if r["stage"] == last]


def test_error_at(run: RunRecord) -> dict:
    """Test error at the last logged epoch and at the best-validation epoch (lowest
    val_error, the earliest on ties) of the final classifier stage, with those epochs."""
    recs = [r for r in final_stage_records(run) if "test_acc" in r]
    out = {"last": None, "last_epoch": None, "best": None, "best_epoch": None}
    if not recs:
        return out
    out.update(last=1.0 - recs[-1]["test_acc"], last_epoch=recs[-1]["epoch"])
    with_val = [r for r in recs if "val_error" in r]
    if with_val:
        best = min(with_val, key=lambda r: r["val_error"])  # min keeps the first of ties
        out.update(best=1.0 - best["test_acc"], best_epoch=best["epoch"])
    return out


def perplexity_at(run: RunRecord) -> dict:
    """A language model's numbers at the last logged epoch and at the best-validation epoch
    (lowest validation loss, the earliest on ties: the weights the run keeps) of its final
    classifier stage: validation and test perplexity (exp of the mean token loss) and
    next-token accuracy, with those epochs."""
    recs = final_stage_records(run)
    out: dict = {"last_epoch": None, "best_epoch": None, "test_ppl": None, "val_ppl": None,
                 "test_acc": None, "last_test_ppl": None, "last_val_ppl": None,
                 "last_test_acc": None}
    if not recs:
        return out
    last = recs[-1]
    out.update(last_epoch=last["epoch"], last_test_ppl=last.get("test_ppl"),
               last_val_ppl=_val_ppl(last), last_test_acc=last.get("test_acc"))
    with_val = [r for r in recs if _num(r.get("val_loss"))]
    best = min(with_val, key=lambda r: r["val_loss"]) if with_val else None
    if best is not None:
        out.update(best_epoch=best["epoch"], val_ppl=_val_ppl(best),
                   test_ppl=best.get("test_ppl"), test_acc=best.get("test_acc"))
    return out


def _val_ppl(record: dict) -> float | None:
    if _num(record.get("val_loss")):
        return math.exp(record["val_loss"])
    return record.get("val_ppl")


def tokens_per_second(run: RunRecord) -> float | None:
    """Training tokens per second of the language model's classifier epochs: the tokens of
    each epoch's steps (steps x data.batch_size x data.block_size; a short last batch counts
    whole) over the epochs' logged time (their evaluation included). None: not logged."""
    data = run.config.get("data") or {}
    batch, block = data.get("batch_size"), data.get("block_size")
    recs = [r for r in run.records if is_classifier(r) and _num(r.get("step"))
            and _num(r.get("time")) and r.get("epoch")]
    if not (batch and block and recs):
        return None
    tokens = sum(r["step"] / r["epoch"] * batch * block for r in recs)
    seconds = sum(r["time"] for r in recs)
    return tokens / seconds if seconds > 0 else None


def epochs_per_stage(run: RunRecord) -> dict[str, int]:
    if run.summary and run.summary.get("epochs"):
        return dict(run.summary["epochs"])
    out: dict[str, int] = {}
    for r in run.records:
        key = r["stage"] + (f":{r['pair']}" if "pair" in r else "")
        out[key] = max(out.get(key, 0), r["epoch"])
    return out


def wall_time(run: RunRecord) -> float | None:
    if run.summary and run.summary.get("wall_time_s") is not None:
        return float(run.summary["wall_time_s"])
    if run.records:  # a killed run: the sum of its logged epochs (evaluation included)
        return float(sum(r.get("time", 0.0) for r in run.records))
    return None


def seed_groups(runs: list[RunRecord]) -> list[list[RunRecord]]:
    """Runs whose resolved configs agree except for ``seed`` and ``out``, two or more."""
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        cfg = {k: v for k, v in run.config.items() if k not in ("seed", "out")}
        key = json.dumps([run.command, cfg], sort_keys=True, default=str)
        groups.setdefault(key, []).append(run)
    return [g for g in groups.values() if len(g) >= 2]


def split_stalled(runs: list[RunRecord]) -> tuple[list[RunRecord], list[RunRecord]]:
    """(finished runs that learned, runs the stall guard marked): tables average the first
    and list the second as failures."""
    return [r for r in runs if r.finished and not r.stalled], [r for r in runs if r.stalled]


def stalled_note(runs: list[RunRecord]) -> str:
    """" STALLED: seed 0" for a table cell, or ""."""
    if not runs:
        return ""
    return " STALLED at chance, not averaged: " + ", ".join(
        f"seed {r.config.get('seed')}" for r in runs)


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (n - 1; 0 for one value) and n."""
    n = len(values)
    mean = sum(values) / n
    std = statistics.stdev(values) if n > 1 else 0.0
    return mean, std, n


# --------------------------------------------------------------------------- formatting


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def count_str(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def _time_str(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.1f}s" if s < 120 else f"{s / 60:.1f}min"


def comparison_table(runs: list[RunRecord]) -> str:
    head = ("| run | method | dataset | model | parameters | multiplications "
            "| test error (last epoch) | test error (best-val epoch) | epochs per stage "
            "| wall time | status |")
    lines = [head, "|---|---|---|---|---:|---:|---:|---:|---|---:|---|"]
    for run in runs:
        e = test_error_at(run)
        last = "-" if e["last"] is None else f"{pct(e['last'])} (ep {e['last_epoch']})"
        best = "-" if e["best"] is None else f"{pct(e['best'])} (ep {e['best_epoch']})"
        eps = ", ".join(f"{k} {v}" for k, v in epochs_per_stage(run).items()) or "-"
        lines.append(f"| {run.name} | {run.method} | {run.dataset} | {run.model} "
                     f"| {count_str(run.params)} | {count_str(run.mults)} | {last} | {best} "
                     f"| {eps} | {_time_str(wall_time(run))} | {run.status} |")
    return "\n".join(lines)


def _ppl(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def lm_table(runs: list[RunRecord]) -> str:
    head = ("| run | method | model | parameters | multiplications per token "
            "| validation perplexity (best-val epoch) | test perplexity (best-val epoch) "
            "| test perplexity (last epoch) | unigram perplexity (chance) "
            "| next-token accuracy (test, best-val epoch) | training tokens/s "
            "| epochs per stage | wall time | status |")
    lines = [head, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for run in runs:
        p = perplexity_at(run)
        block = (run.config.get("data") or {}).get("block_size")
        mults = None if run.mults is None or not block else round(run.mults / block)
        val = "-" if p["val_ppl"] is None else f"{_ppl(p['val_ppl'])} (ep {p['best_epoch']})"
        best = "-" if p["test_ppl"] is None else f"{_ppl(p['test_ppl'])} (ep {p['best_epoch']})"
        last = ("-" if p["last_test_ppl"] is None
                else f"{_ppl(p['last_test_ppl'])} (ep {p['last_epoch']})")
        speed = tokens_per_second(run)
        eps = ", ".join(f"{k} {v}" for k, v in epochs_per_stage(run).items()) or "-"
        lines.append(f"| {run.name} | {run.method} | {run.model} | {count_str(run.params)} "
                     f"| {count_str(mults)} | {val} | {best} | {last} "
                     f"| {_ppl((run.summary or {}).get('unigram_ppl'))} | {pct(p['test_acc'])} "
                     f"| {'-' if speed is None else f'{speed:,.0f}'} | {eps} "
                     f"| {_time_str(wall_time(run))} | {run.status} |")
    return "\n".join(lines)


def _seed_table(runs: list[RunRecord], columns) -> str:
    """Runs that differ only by seed, one row a group: the finished runs' mean ± std of each
    column, the stalled ones listed by name and never averaged (killed runs are listed
    elsewhere). ``columns``: (header, value of a run or None, format of (mean, std))."""
    groups = seed_groups(runs)
    if not groups:
        return "No runs that differ only by seed."
    lines = ["| runs | method | model | seeds | n | "
             + " | ".join(head for head, _, _ in columns) + " | stalled (not averaged) |",
             "|---|---|---|---|---:|" + "---:|" * len(columns) + "---|"]
    for g in groups:
        done, stalled = split_stalled(g)
        failed = ", ".join(f"{r.name} (seed {r.config.get('seed')})" for r in stalled)
        cells = []
        for _, value, fmt in columns:
            vals = [v for v in map(value, done) if v is not None]
            if vals:
                m, s, n = mean_std(vals)
                cells.append(fmt(m, s) + f" (n={n})")
            else:
                cells.append("-")
        seeds = ", ".join(str(r.config.get("seed")) for r in done) or "-"
        lines.append(f"| {', '.join(r.name for r in g)} | {g[0].method} | {g[0].model} "
                     f"| {seeds} | {len(done)} | " + " | ".join(cells)
                     + f" | {failed or '-'} |")
    return "\n".join(lines)


def lm_seed_table(runs: list[RunRecord]) -> str:
    return _seed_table(runs, [
        ("test perplexity (best-val epoch), mean ± std",
         lambda r: perplexity_at(r)["test_ppl"], lambda m, s: f"{m:.2f} ± {s:.2f}"),
        ("next-token accuracy (test), mean ± std",
         lambda r: perplexity_at(r)["test_acc"], lambda m, s: f"{m:.2%} ± {s:.2%}")])


def seed_table(runs: list[RunRecord]) -> str:
    error = lambda m, s: f"{100 * m:.2f} ± {100 * s:.2f}%"  # noqa: E731
    return _seed_table(runs, [
        ("test error (last epoch), mean ± std", lambda r: test_error_at(r)["last"], error),
        ("test error (best-val epoch), mean ± std", lambda r: test_error_at(r)["best"], error)])


# --------------------------------------------------------------------------- plots


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise FitnetsError("the report's plots need matplotlib: pip install 'fitnets[report]' "
                           "(or pip install matplotlib).") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


LOSS_KEYS = ("train_loss", "train_ce", "train_soft", "val_loss", "val_hint_loss")
ACC_KEYS = ("val_acc", "test_acc")


def plot_curves(run: RunRecord, path: Path) -> Path | None:
    """Losses (top) and accuracies with lambda on a second axis (bottom) against the epoch
    counted across stages; dotted lines mark where each stage starts. A language model gets
    a perplexity panel between them (validation and test, log scale, with the unigram
    perplexity as a dashed line: chance), and its accuracies are next-token accuracies."""
    if not run.records:
        return None
    plt = pyplot()
    xs = list(range(1, len(run.records) + 1))
    lm = run.language_model
    if lm:
        fig, (ax_l, ax_p, ax_a) = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
        _plot_perplexity(run, xs, ax_p)
    else:
        fig, (ax_l, ax_a) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    for key in LOSS_KEYS:
        pts = [(x, r[key]) for x, r in zip(xs, run.records) if _num(r.get(key))]
        if pts:
            ax_l.plot(*zip(*pts), marker=".", label=key)
    if any(_num(r.get(k)) and r[k] > 0 for r in run.records for k in LOSS_KEYS):
        ax_l.set_yscale("log")
    ax_l.set_ylabel("loss")
    for key in ACC_KEYS:
        pts = [(x, 100 * r[key]) for x, r in zip(xs, run.records) if _num(r.get(key))]
        if pts:
            ax_a.plot(*zip(*pts), marker=".", label=key)
    ax_a.set_ylabel("next-token accuracy (%)" if lm else "accuracy (%)")
    ax_a.set_xlabel("epoch (all stages)")
    lam = [(x, r["lambda"]) for x, r in zip(xs, run.records) if _num(r.get("lambda"))]
    if lam:
        ax_lam = ax_a.twinx()
        ax_lam.plot(*zip(*lam), color="grey", linestyle="--", label="lambda (right axis)")
        ax_lam.set_ylabel("lambda")
        ax_lam.legend(loc="lower right", fontsize=8)
    axes = (ax_l, ax_p, ax_a) if lm else (ax_l, ax_a)
    for x, label in _boundaries(run.records):
        for ax in axes:
            ax.axvline(x - 0.5, color="black", linestyle=":", linewidth=1)
        ax_l.annotate(label, (x - 0.5, 1.0), xycoords=("data", "axes fraction"),
                      fontsize=8, va="bottom")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right" if ax is ax_l else "upper left", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{run.name}: {run.method}, {run.model} ({run.status})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _plot_perplexity(run: RunRecord, xs: list[int], ax) -> None:
    for key, label in (("val_ppl", "val_ppl"), ("test_ppl", "test_ppl")):
        pts = [(x, _val_ppl(r) if key == "val_ppl" else r.get(key))
               for x, r in zip(xs, run.records)]
        pts = [(x, v) for x, v in pts if _num(v)]
        if pts:
            ax.plot(*zip(*pts), marker=".", label=label)
    chance = (run.summary or {}).get("unigram_ppl")
    if _num(chance):
        ax.axhline(chance, color="grey", linestyle="--", label=f"unigram {chance:.1f} (chance)")
    values = [v for line in ax.get_lines() for v in line.get_ydata()]
    if values and min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale("log")  # early epochs near the vocabulary size, later ones near 1
    ax.set_ylabel("perplexity")


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _boundaries(records: list[dict]) -> list[tuple[int, str]]:
    out, prev = [], None
    for i, r in enumerate(records, 1):
        label = stage_label(r)
        if label != prev:
            out.append((i, label))
            prev = label
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"


# --------------------------------------------------------------------------- the report


def load_runs(run_dirs: list[str | Path]) -> list[RunRecord]:
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise FitnetsError("fitnets report needs at least one run directory.")
    names = [p.resolve().name for p in paths]
    runs = []
    for p, n in zip(paths, names):
        if names.count(n) > 1:  # same leaf name from different places: keep the parent
            n = f"{p.resolve().parent.name}/{n}"
        runs.append(load_run(p, n))
    return runs


def report(run_dirs: list[str | Path], out: str | Path, title: str | None = None,
           preamble: str = "") -> Path:
    """Write ``out/report.md`` and one ``out/curves-<run>.png`` per run; returns the path.

    ``preamble`` is Markdown placed after the title (the benchmark drivers put their own
    tables there).
    """
    pyplot()  # fail before writing anything when matplotlib is missing
    everything = load_runs(run_dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title or 'FitNets report'}", ""]
    if preamble:
        parts += [preamble.rstrip(), ""]
    runs = [r for r in everything if not r.language_model]
    lms = [r for r in everything if r.language_model]
    if runs and lms:
        parts += [f"{len(runs)} image-classifier run(s) and {len(lms)} language-model run(s): "
                  "each kind has its own section (error rates and perplexities are not "
                  "compared).", ""]
    if runs:
        parts += _image_sections(runs, "Image classifiers: " if lms else "")
    if lms:
        parts += _lm_sections(lms)
    parts += ["## Learning curves", ""]
    used: set[str] = set()
    for run in everything:
        slug = _slug(run.name)
        while slug in used:
            slug += "_"
        used.add(slug)
        png = plot_curves(run, out / f"curves-{slug}.png")
        parts += [f"### {run.name}", "", f"`{run.path}` — {run.status}", ""]
        parts += [f"![{run.name}]({png.name})" if png else "(no metrics logged)", ""]
    path = out / "report.md"
    path.write_text("\n".join(parts))
    return path


def _image_sections(runs: list[RunRecord], prefix: str = "") -> list[str]:
    return ["## " + (f"{prefix}runs" if prefix else "Runs"), "", comparison_table(runs), "",
              "Test error (last epoch): the test error logged at the last epoch of the final "
              "classifier stage. Test error (best-val epoch): the test error logged at the "
              "epoch of that stage with the lowest validation error (the weights a run with "
              "early stopping and restore_best keeps). Multiplications: per image, counted "
              "on the model built from its name (\"-\": it could not be built here). "
              "A killed run's wall time is the sum of its logged epochs.", "",
            "## " + (f"{prefix}seeds" if prefix else "Seeds"), "", seed_table(runs), "",
            SEEDS_NOTE, ""]


SEEDS_NOTE = ("Mean ± sample standard deviation (n - 1) over the finished runs whose resolved "
              "configs differ only by seed and out; a run whose stage stalled at chance "
              "is a failure, listed in its own column and never averaged.")


def _lm_sections(runs: list[RunRecord]) -> list[str]:
    return ["## Language models", "", lm_table(runs), "",
            "Perplexity: exp of the mean next-token loss (cross-entropy in nats) over every "
            "position of the split's blocks. Best-val epoch: the epoch of the final "
            "classifier stage with the lowest validation loss (the weights the run keeps in "
            "model.pt); last epoch: that stage's last logged one. Unigram perplexity: the "
            "training split's, the perplexity of the best model that ignores context (the "
            "stall guard's chance level); a model worth its context is well below it. "
            "Next-token accuracy: the share of positions whose most likely token is the "
            "next one. Training tokens/s: each classifier epoch's steps x data.batch_size x "
            "data.block_size over the epochs' logged time (evaluation included). "
            "Multiplications per token: the run's count for one block of data.block_size "
            "tokens, divided by it.", "",
            "## Language models: seeds", "", lm_seed_table(runs), "", SEEDS_NOTE, ""]
