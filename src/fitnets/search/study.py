"""The study: what a search directory holds (search.json), Optuna's storage, sampler and
pruner, and creating or joining a study after checking that it searches the same thing."""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from fitnets.config import Config, to_dict
from fitnets.config_yaml import FREE_MAPPINGS
from fitnets.errors import FitnetsError
from fitnets.search.space import Dim

SPEC = "search.json"
BASE = "base.yaml"
# keys a joining process may set differently (where it runs, not what it measures)
LOCAL_KEYS = ("device", "out", "data.root", "perf", "dist", "tracking", "tensorboard",
              "checkpoint_steps", "search")


def load_optuna():
    """Optuna, quiet, or a refusal saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise FitnetsError("fitnets search needs Optuna: pip install 'fitnets[search]'.") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


@dataclass
class Spec:
    """What a search directory holds (search.json); every worker reads it."""

    command: str
    trials: int
    storage: str
    study: str
    space: list[dict]
    budget: dict[str, Any]
    seed: int
    startup_trials: int
    prune_after: int
    parallel: int = 1  # worker processes on this machine (--resume starts as many)
    train_size: int | None = None  # training images a trial's epoch steps over
    # what trials are selected and pruned on: validation accuracy (higher is better), or
    # for a language model (data.name=text) validation perplexity (lower is better)
    metric: str = "val_acc"

    def dims(self) -> dict[str, Dim]:
        return {d["key"]: Dim(**d) for d in self.space}

    @property
    def lower_is_better(self) -> bool:
        return self.metric in LOWER_IS_BETTER

    def shown(self, value: float) -> str:
        """A value of the metric for people: 97.33% or perplexity 15.21."""
        return f"ppl {value:.2f}" if self.metric == "val_ppl" else f"{100 * value:.2f}%"

    def better(self, a: float, b: float) -> bool:
        return a < b if self.lower_is_better else a > b


LOWER_IS_BETTER = {"val_ppl"}
METRIC_NAMES = {"val_acc": "validation accuracy", "val_ppl": "validation perplexity"}


def metric_of(cfg: Config) -> str:
    """The metric a search of ``cfg`` selects on: a language model's validation perplexity
    (its best epoch is its lowest validation loss too), else validation accuracy."""
    return "val_ppl" if cfg.data.name == "text" else "val_acc"


def default_storage(search_dir: Path) -> str:
    return f"sqlite:///{(Path(search_dir) / 'study.db').resolve()}"


def load_spec(search_dir: Path) -> Spec:
    path = Path(search_dir) / SPEC
    if not path.is_file():
        raise FitnetsError(f"'{search_dir}' is not a search directory (no {SPEC}); start one "
                           "with fitnets search RECIPE --out DIR.")
    known = {f.name for f in fields(Spec)}
    spec = Spec(**{k: v for k, v in json.loads(path.read_text()).items() if k in known})
    if not spec.storage:  # this directory's study.db, wherever the directory now is
        spec.storage = default_storage(search_dir)
    return spec


def save_spec(search_dir: Path, spec: Spec, storage: str | None) -> None:
    """search.json; the default storage is written as "": the directory's own study.db, so
    that a search directory can be moved or copied and still be resumed and reported."""
    (Path(search_dir) / SPEC).write_text(
        json.dumps({**asdict(spec), "storage": storage or ""}, indent=2) + "\n")


def update_spec(search_dir: Path, **changes: Any) -> None:
    """Change keys of search.json in place (e.g. ``parallel`` on --resume)."""
    path = Path(search_dir) / SPEC
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}, indent=2) + "\n")


def storage(url: str):
    optuna = load_optuna()
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as e:  # a bad URL, a missing driver, a server that does not answer
        raise FitnetsError(f"cannot open the search storage '{url}': "
                           f"{' '.join(str(e).split())[:300]}") from None


def sampler(spec: Spec, number: int = 0):
    """TPE seeded by the recipe's seed and the trial's number alone: one worker samples the
    same trials from the same seed; with several, each trial's sample still depends on
    which trials had ended when it was asked for."""
    optuna = load_optuna()
    return optuna.samplers.TPESampler(seed=spec.seed * 100_003 + number,
                                      n_startup_trials=spec.startup_trials,
                                      constant_liar=True)


def pruner(spec: Spec):
    """The median rule; the worker asks it only once a trial may be judged
    (fitnets.search.worker.may_prune)."""
    optuna = load_optuna()
    return optuna.pruners.MedianPruner(n_startup_trials=spec.prune_after, n_warmup_steps=0)


def open_study(spec: Spec):
    optuna = load_optuna()
    return optuna.load_study(study_name=spec.study, storage=storage(spec.storage),
                             sampler=sampler(spec), pruner=pruner(spec))


def comparable(cfg_dict: dict) -> dict:
    """A config's keys that decide what a trial measures (not where it runs)."""
    flat = _flatten(cfg_dict)
    return {k: v for k, v in flat.items()
            if not any(k == p or k.startswith(p + ".") for p in LOCAL_KEYS)}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in FREE_MAPPINGS:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def create_or_join(spec: Spec, base: Config) -> tuple[Any, bool]:
    """Create the study, or join the one of that name in the storage after checking that it
    searches the same space, on the same budget, from the same recipe."""
    optuna = load_optuna()
    study = optuna.create_study(study_name=spec.study, storage=storage(spec.storage),
                                direction="minimize" if spec.lower_is_better else "maximize",
                                sampler=sampler(spec),
                                pruner=pruner(spec), load_if_exists=True)
    mine = {"space": spec.space, "budget": spec.budget, "base": comparable(to_dict(base))}
    theirs = study.user_attrs.get("fitnets")
    if theirs is None:
        study.set_user_attr("fitnets", json.loads(json.dumps(mine)))
        return study, False
    theirs_j, mine_j = json.loads(json.dumps(theirs)), json.loads(json.dumps(mine))
    if theirs_j != mine_j:
        diff = []
        for part in ("space", "budget"):
            if theirs_j[part] != mine_j[part]:
                diff.append(f"{part}: {theirs_j[part]} (study) vs {mine_j[part]} (here)")
        keys = sorted(k for k in set(theirs_j["base"]) | set(mine_j["base"])
                      if theirs_j["base"].get(k) != mine_j["base"].get(k))
        if keys:
            diff.append("config keys " + ", ".join(
                f"{k}={theirs_j['base'].get(k)!r} (study) vs {mine_j['base'].get(k)!r} (here)"
                for k in keys[:6]))
        raise FitnetsError(f"study '{spec.study}' in {spec.storage} searches something else; "
                           f"{'; '.join(diff)}. Join it with the same recipe, overrides, "
                           "--space and --budget, or name another study with --study.")
    return study, True
