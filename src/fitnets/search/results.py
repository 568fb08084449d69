"""The answer: the ranked table (results.md), the best trial's recipe (best.yaml) and
``fitnets report SEARCH_DIR`` (the table with Optuna's history and importance plots)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from fitnets.config import dump_yaml, make_config
from fitnets.search.space import config_with
from fitnets.search.study import (
    BASE,
    METRIC_NAMES,
    Spec,
    load_optuna,
    load_spec,
    open_study,
)

LABELS = {"pair": "pair", "hints.regressor": "regressor", "kd.tau": "tau",
          "kd.lambda_init": "lambda", "hints.stage.optim.lr": "hint lr",
          "hints.beta": "beta"}


def label(key: str) -> str:
    return LABELS.get(key, key)


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def show_url(url: str) -> str:
    """A storage URL for people: a SQLite file relative to the working directory."""
    if url.startswith("sqlite:///"):
        return "sqlite:///" + os.path.relpath(url[len("sqlite:///"):])
    return url


def describe_space(spec: Spec, rows: list[dict]) -> str:
    lines = [f"study '{spec.study}' in {show_url(spec.storage)}: {spec.trials} trials, TPE "
             f"sampling (seed {spec.seed}), median pruning on {METRIC_NAMES[spec.metric]} late "
             "in the "
             "KD stage; a trial that ends at chance (stall guard) counts as stalled"]
    for key, dim in spec.dims().items():
        lines.append(f"  {key:24s} {dim.describe()}")
    if rows:
        lines.append("  pairs by distance from the middle of both networks (fitnets layers):")
        for r in rows:
            shape = ("x".join(map(str, r["guided_shape"])) + " -> "
                     + "x".join(map(str, r["hint_shape"]))) if r["guided_shape"] else "?"
            lines.append(f"    {r['guided']}/{r['hint']:10s} {shape:24s} regressor "
                         f"{r['kind']} {r['params'] or 0:,} params"
                         + ("  (default pair)" if r["default"] else ""))
    if spec.budget:
        lines.append("  budget of each trial: " + ", ".join(f"{k}={v}"
                                                          for k, v in spec.budget.items()))
    return "\n".join(lines)


def state(t, spec: Spec) -> str:
    name = t.state.name
    last = max(t.intermediate_values) if t.intermediate_values else None
    if name == "COMPLETE":
        return f"val {spec.shown(t.value)}"
    if name == "PRUNED":
        why = "stalled" if t.user_attrs.get("stalled") else "pruned"
        v = t.intermediate_values.get(last) if last is not None else None
        return f"{why} ep {last} " + (f"({spec.shown(v)})" if v is not None else "")
    if name == "FAIL":
        return "failed"
    return name.lower()


def trial_line(t, spec: Spec) -> str:
    params = ", ".join(f"{label(k)} {fmt(v)}" for k, v in t.params.items())
    return f"trial {t.number:3d} {state(t, spec):22s} {params}"


def ranked(study, spec: Spec) -> list:
    """Complete trials by the search's metric (validation accuracy, or perplexity), best
    first, then pruned ones by their last value, then the rest."""
    sign = 1 if spec.lower_is_better else -1

    def key(t):
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values \
            else -sign * math.inf
        order = {"COMPLETE": 0, "PRUNED": 1}.get(t.state.name, 2)
        return (order, sign * (t.value if t.value is not None else last), t.number)
    return sorted(study.get_trials(deepcopy=False), key=key)


def results_table(study, spec: Spec) -> str:
    keys = list(spec.dims())
    head = ["rank", "trial"] + [label(k) for k in keys] + ["validation", "KD epochs", "time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, t in enumerate(ranked(study, spec), 1):
        secs = t.duration.total_seconds() if t.duration is not None else None
        cells = [str(i), str(t.number) + (" (recipe)" if t.user_attrs.get("recipe") else "")]
        cells += [fmt(t.params.get(k, "-")) for k in keys]
        cells += [state(t, spec), str(t.user_attrs.get("last_epoch", "-")),
                  f"{secs:.0f} s" if secs is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    errors = [f"- trial {t.number} failed: {t.user_attrs['error']}" for t in study.trials
              if t.state.name == "FAIL" and t.user_attrs.get("error")]
    return "\n".join(lines + ([""] + errors if errors else []))


def complete(study) -> list:
    optuna = load_optuna()
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def write_best(search_dir: Path, study, spec: Spec) -> Path | None:
    """best.yaml: base.yaml with the best complete trial's values, without the budget."""
    done = complete(study)
    if not done:
        return None
    sign = -1 if spec.lower_is_better else 1
    best = max(done, key=lambda t: (sign * t.value, -t.number))
    base = make_config(Path(search_dir) / BASE)
    cfg = config_with(base, best.params, {})
    head = (f"# fitnets search: the best of {len(done)} complete trials of study "
            f"'{spec.study}' (trial {best.number}, {METRIC_NAMES[spec.metric]} "
            f"{spec.shown(best.value)} on the search's budget: "
            f"{', '.join(f'{k}={v}' for k, v in spec.budget.items()) or 'the recipe'}).\n"
            f"# Searched: {', '.join(f'{label(k)} {fmt(v)}' for k, v in best.params.items())}"
            f"\n# Train it at full length: fitnets distill {Path(search_dir) / 'best.yaml'}\n")
    path = Path(search_dir) / "best.yaml"
    path.write_text(head + dump_yaml(cfg))
    return path


def write_results(search_dir: Path) -> str:
    """results.md (the ranked table) and best.yaml; returns the table."""
    spec = load_spec(search_dir)
    study = open_study(spec)
    table = results_table(study, spec)
    (Path(search_dir) / "results.md").write_text(
        f"# Search '{spec.study}' ({len(study.trials)} of {spec.trials} trials)\n\n"
        f"{describe_space(spec, [])}\n\n{table}\n")
    write_best(search_dir, study, spec)
    return table


def report_search(search_dir: Path, out: Path) -> Path:
    """``fitnets report SEARCH_DIR``: the ranked table, and Optuna's history and parameter-
    importance plots drawn with matplotlib, in ``out``/report.md."""
    spec = load_spec(search_dir)
    study = open_study(spec)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = results_table(study, spec)
    best = write_best(search_dir, study, spec)
    parts = [f"# Search '{spec.study}'", "", f"{len(study.trials)} of {spec.trials} trials; "
             f"storage {show_url(spec.storage)}", "", "```", describe_space(spec, []), "```", "",
             table, ""]
    if best is not None:
        parts += [f"Best trial's recipe: `{best}` (train it: `fitnets distill {best}`).", ""]
    parts += _plots(study, out)
    path = out / "report.md"
    path.write_text("\n".join(parts) + "\n")
    return path


def _plots(study, out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["(plots need matplotlib: pip install 'fitnets[report]')"]
    from optuna.visualization import matplotlib as vis

    lines = []
    for name, title, draw in (
            ("history.png", "Optimisation history", vis.plot_optimization_history),
            ("importance.png", "Parameter importance", vis.plot_param_importances)):
        try:
            ax = draw(study)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.tight_layout()
            fig.savefig(out / name, dpi=100)
            plt.close(fig)
            lines += [f"## {title}", "", f"![{title}]({name})", ""]
        except Exception as e:  # too few complete trials, a constant objective ...
            lines += [f"## {title}", "", f"(not drawn: {' '.join(str(e).split())[:200]})", ""]
    return lines
