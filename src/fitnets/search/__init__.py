"""``fitnets search``: which layers to hint, with which regressor, tau and lambda, on Optuna.

A search is a directory::

    SEARCH_DIR/search.json   what is searched: the space, the budget, the study and storage,
                             the worker processes (--resume starts as many)
    SEARCH_DIR/base.yaml     the recipe with the command line's overrides, resolved
    SEARCH_DIR/study.db      the Optuna study (SQLite; any RDB URL with --storage)
    SEARCH_DIR/trials/NNNN/  each trial: an ordinary run directory (config, metrics, checkpoints)
    SEARCH_DIR/logs/         each worker process's output
    SEARCH_DIR/results.md    the ranked table;  SEARCH_DIR/best.yaml: the best trial's recipe

The modules: ``space`` (the searched keys; no Optuna), ``probe`` (the data's sizes and the
models' layers, found once), ``check`` (the refusals before any trial), ``study``
(search.json, Optuna's storage, sampler and pruner), ``worker`` (the worker processes and
their lock), ``command`` (the command) and ``results`` (results.md, best.yaml, the report).

The space comes from what each method offers (``fitnets.distill.methods``: its ``SEARCH``):
the candidate (guided, hint) pairs that ``fitnets layers --teacher T --student S`` lists,
ranked by their distance from the middle of both networks (the recipe's own pair first); the
regressor kinds that fit every one of them; ``kd.tau``, ``kd.lambda_init`` and the hint
stage's learning rate around the recipe's values. The recipe's ``search:`` section or
``--space key=choices`` narrow or widen it. Before any trial runs, every trial's config is
built and checked (validation split, layers, regressors, teacher weights): what cannot work
is refused (exit code 2) with the choices there are.

Each trial is a run of the recipe on the short ``budget``, selected on validation accuracy
(a language model's, data.name=text: validation perplexity, lower is better); the test split
is never evaluated. Trials are sampled by Optuna's TPE, seeded by the recipe's
``seed`` and the trial's number: with one worker the same command samples the same trials;
with ``--parallel P`` a trial's sample also depends on which trials had ended when it was
asked for, so parallel searches differ in their later trials. A trial is judged by the median
rule only late in its KD stage (fitnets.search.worker.may_prune: past a warm-up and once the
stall guard may judge); a trial whose run ends at chance (the stall guard's final verdict)
counts as stalled. The recipe's own settings are the first trial. A search that completes
no trial exits with code 3 (command.NO_TRIAL_COMPLETED).

``--parallel P`` starts P worker processes on this machine (they split the CPU cores, or
share one GPU); any process anywhere that opens the same storage and study name joins the
study (``--storage postgresql://...``). A killed search continues with ``--resume`` (with as
many workers): finished trials are kept, a trial killed mid-run continues from its own last
checkpoint, and a trial left running by a process killed before it recorded itself is
claimed by the next worker.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Dim": "space", "parse_dim": "space", "build_space": "space", "derive_space": "space",
    "recipe_values": "space", "config_with": "space",
    "Spec": "study", "load_spec": "study", "open_study": "study",
    "work": "worker", "search": "command", "prepare": "command",
    "NO_TRIAL_COMPLETED": "command",
    "write_results": "results", "report_search": "results", "results_table": "results",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # the modules load on first use: `fitnets.search.space` imports neither Optuna nor
    # the worker machinery
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
