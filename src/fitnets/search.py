"""``fitnets search``: which layers to hint, with which regressor, tau and lambda, on Optuna.

A search is a directory::

    SEARCH_DIR/search.json   what is searched: the space, the budget, the study and storage
    SEARCH_DIR/base.yaml     the recipe with the command line's overrides, resolved
    SEARCH_DIR/study.db      the Optuna study (SQLite; any RDB URL with --storage)
    SEARCH_DIR/trials/NNNN/  each trial: an ordinary run directory (config, metrics, checkpoints)
    SEARCH_DIR/logs/         each worker process's output
    SEARCH_DIR/results.md    the ranked table;  SEARCH_DIR/best.yaml: the best trial's recipe

The space comes from what the tool knows (:func:`derive_space`): the candidate (guided, hint)
pairs that ``fitnets layers --teacher T --student S`` lists, ranked by their distance from
the middle of both networks; the regressor kinds that fit every one of them; ``kd.tau``,
``kd.lambda_init`` and the hint stage's learning rate around the recipe's values. The recipe's
``search:`` section or ``--space key=choices`` narrow or widen it.

Each trial is a run of the recipe on the short ``budget`` (hint epochs and a few KD epochs),
selected on validation accuracy; the test split is never evaluated. Trials are sampled by
Optuna's TPE and pruned on validation accuracy per KD epoch (median rule); a trial whose
stage stalls at chance (fitnets/stall.py) is pruned at once. The recipe's own settings are
the first trial, so the default pair is measured on the same budget.

``--parallel P`` starts P worker processes on this machine (they split the CPU cores, or
share one GPU); any process anywhere that opens the same storage and study name joins the
study (``--storage postgresql://...``). A killed search continues with ``--resume``: finished
trials are kept, and a trial killed mid-run continues from its own last checkpoint.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fitnets.config import Config, dump_yaml, make_config, nest_dotted, parse_overrides, to_dict
from fitnets.errors import FitnetsError

SPEC = "search.json"
BASE = "base.yaml"
METRIC = "val_acc"
# keys a joining process may set differently (where it runs, not what it measures)
_LOCAL_KEYS = ("device", "out", "data.root", "perf", "dist", "tracking", "tensorboard",
               "checkpoint_steps", "search")
_HINT_METHODS = ("fitnet", "joint")
# the regressor kinds a derived space may offer (fc is left out: a map-to-map fc regressor
# has millions of weights; name it in the space to search it)
_SEARCHED_KINDS = ("conv", "conv1x1", "strided", "transposed", "interp", "token", "none")


def _optuna():
    try:
        import optuna
    except ImportError:
        raise FitnetsError("fitnets search needs Optuna: pip install 'fitnets[search]'.") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


# --------------------------------------------------------------------------- the space


@dataclass
class Dim:
    """One searched key: ``choices`` (categorical), or a ``low``..``high`` range."""

    key: str  # a config key (kd.tau), or "pair" (GUIDED/HINT)
    choices: list | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    def suggest(self, trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, self.choices)
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        return isinstance(value, (int, float)) and self.low <= value <= self.high

    def describe(self) -> str:
        if self.choices is not None:
            return ", ".join(str(c) for c in self.choices)
        return f"{self.low:g} .. {self.high:g}" + (" (log)" if self.log else "") + (
            " (integer)" if self.integer else "")


def parse_dim(key: str, value: Any) -> Dim | None:
    """A space entry: a list (choices), {low, high[, log]} (a range), None (not searched), or
    the command line's text: ``a,b,c`` (choices), ``LOW:HIGH`` or ``LOW:HIGH:log``, or empty."""
    if isinstance(value, str):
        return _parse_dim_text(key, value)
    if value is None:
        return None
    if isinstance(value, list):
        if not value:
            raise FitnetsError(f"search space '{key}': the list of choices is empty.")
        return Dim(key, choices=[_pair_text(v) if key == "pair" else v for v in value])
    if isinstance(value, dict) and {"low", "high"} <= set(value) <= {"low", "high", "log"}:
        return _range(key, value["low"], value["high"], bool(value.get("log", False)))
    raise FitnetsError(f"search space '{key}': expected a list of choices, {{low, high, log}} "
                       f"or null, got {value!r}.")


def _parse_dim_text(key: str, text: str) -> Dim | None:
    import yaml

    from fitnets.config import _safe_load  # YAML, plus floats such as 1e-3

    text = text.strip()
    if not text:
        return None
    parts = text.split(":")
    if key != "pair" and len(parts) in (2, 3) and "," not in text:
        try:
            low, high = (_safe_load(p) for p in parts[:2])
        except yaml.YAMLError:
            low = high = None
        if _is_number(low) and _is_number(high):
            if len(parts) == 3 and parts[2] != "log":
                raise FitnetsError(f"--space {key}={text}: a range is LOW:HIGH or "
                                   "LOW:HIGH:log.")
            return _range(key, low, high, len(parts) == 3)
    choices = []
    for word in text.split(","):
        try:
            value = _safe_load(word) if key != "pair" else word.strip()
        except yaml.YAMLError:
            value = word.strip()
        choices.append(value)
    return parse_dim(key, choices)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _range(key: str, low: Any, high: Any, log: bool) -> Dim:
    if not (_is_number(low) and _is_number(high)) or low >= high:
        raise FitnetsError(f"search space '{key}': a range needs numbers low < high, got "
                           f"{low!r} .. {high!r}.")
    if log and low <= 0:
        raise FitnetsError(f"search space '{key}': a log range needs low > 0, got {low!r}.")
    integer = isinstance(low, int) and isinstance(high, int)
    return Dim(key, low=low, high=high, log=log, integer=integer)


def _pair_text(value: Any) -> str:
    """A pair choice as GUIDED/HINT (from that text, or a [guided, hint] list)."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[0]}/{value[1]}"
    if isinstance(value, str) and value.count("/") == 1 and all(value.split("/")):
        return value
    raise FitnetsError(f"search space 'pair': each choice is GUIDED/HINT (a student layer and a "
                       f"teacher layer, as `fitnets layers --teacher T --student S` lists "
                       f"them), got {value!r}.")


def ranked_pairs(cfg: Config) -> list[dict]:
    """Every (guided, hint) pair of the recipe's student and teacher with the recipe's
    regressor kind, as ``fitnets layers`` lists them (fitnets.distill.suggest)."""
    from fitnets.distill.suggest import suggest_pairs
    from fitnets.models import MaxoutOptions, build_model

    nets = []
    for role in ("student", "teacher"):
        m = getattr(cfg, role)
        if m.name.startswith("python:"):
            raise FitnetsError("a search derives its hint pairs from named models; list the "
                               "pairs yourself with --space pair=GUIDED/HINT,...")
        nets.append(build_model(m.name, maxout=MaxoutOptions.of(m)))
    student, teacher = nets
    shape = getattr(teacher, "input_shape", None) or getattr(student, "input_shape", None)
    if shape is None:
        raise FitnetsError(f"the models '{cfg.student.name}' and '{cfg.teacher.name}' do not say "
                           "what input they take (no input_shape), so their hint pairs cannot "
                           "be listed here; give them with --space pair=GUIDED/HINT,...")
    return suggest_pairs(student, teacher, tuple(shape), cfg.hints.regressor)


def derive_space(cfg: Config, top: int) -> tuple[dict[str, Dim], list[dict]]:
    """The searched keys the tool derives for ``cfg``'s method, and the ranked pair rows.

    - fitnet / joint: ``pair`` among the ``top`` possible pairs nearest the middle of both
      networks (fitnets.distill.suggest.top_pairs; the default pair always in); the
      ``hints.regressor`` kinds that fit every one of them (with the recipe's own kind first).
    - fitnet: the hint stage's learning rate, a tenth to ten times the recipe's (log).
    - fitnet / kd: ``kd.tau`` 1..8 and ``kd.lambda_init`` 0.5..16 (log; the paper: 3 and 4).
    - joint: ``hints.beta``, a tenth to ten times the recipe's (log).
    """
    from fitnets.distill.regressor import possible_kinds
    from fitnets.distill.suggest import top_pairs

    space: dict[str, Dim] = {}
    rows: list[dict] = []
    if cfg.method == "backprop":
        return space, rows
    if cfg.method in _HINT_METHODS:
        rows = top_pairs(ranked_pairs(cfg), top)
        if rows:
            space["pair"] = Dim("pair", choices=[f"{r['guided']}/{r['hint']}" for r in rows])
            common = [k for k in _SEARCHED_KINDS
                      if all(k in possible_kinds(r["guided_shape"], r["hint_shape"])
                             for r in rows)]
            own = cfg.hints.regressor
            kinds = ([own] if own != "auto" else []) + [k for k in common if k != own]
            if len(kinds) > 1:
                space["hints.regressor"] = Dim("hints.regressor", choices=kinds)
    if cfg.method == "fitnet":
        lr = cfg.hints.stage.optim.lr
        space["hints.stage.optim.lr"] = Dim("hints.stage.optim.lr", low=lr / 10, high=lr * 10,
                                            log=True)
    if cfg.method in ("fitnet", "kd"):
        space["kd.tau"] = Dim("kd.tau", low=1.0, high=8.0, log=True)
        space["kd.lambda_init"] = Dim("kd.lambda_init", low=0.5, high=16.0, log=True)
    if cfg.method == "joint":
        b = cfg.hints.beta
        space["hints.beta"] = Dim("hints.beta", low=b / 10, high=b * 10, log=True)
    return space, rows


def build_space(cfg: Config, top: int, extra: dict[str, Any]) -> tuple[dict[str, Dim], list]:
    """The derived space, then the recipe's ``search.space``, then ``extra`` (--space): each
    entry adds a key, replaces one, or (None / empty) removes it. Every key is checked by
    building a config with each of its choices and bounds."""
    space, rows = derive_space(cfg, top)
    for key, value in {**cfg.search.space, **extra}.items():
        dim = parse_dim(key, value)
        if dim is None:
            space.pop(key, None)
        else:
            space[key] = dim
    if not space:
        raise FitnetsError(f"nothing to search for method={cfg.method}: add keys with "
                           "--space KEY=CHOICES (e.g. --space train.optim.lr=1e-4:1e-2:log).")
    if "pair" in space and cfg.method not in _HINT_METHODS:
        raise FitnetsError(f"--space pair=...: method={cfg.method} has no hint stage; use "
                           "method=fitnet or joint.")
    for dim in space.values():  # a typo in a key, or a value the config refuses, fails now
        values = dim.choices if dim.choices is not None else [dim.low, dim.high]
        for v in values:
            _config_with(cfg, {dim.key: v}, {})
    return space, rows


def _settings(params: dict[str, Any]) -> dict[str, Any]:
    """Searched values -> config keys (a pair is hints.pairs=[[guided, hint]])."""
    out = {}
    for key, value in params.items():
        if key == "pair":
            out["hints.pairs"] = [value.split("/")]
        else:
            out[key] = value
    return out


def _config_with(base: Config, params: dict[str, Any], budget: dict[str, Any],
                 out: str | None = None) -> Config:
    values = {**budget, **_settings(params), "out": out}
    return make_config(None, [], base=to_dict(base), settings=nest_dotted(values))


def recipe_values(cfg: Config, space: dict[str, Dim]) -> dict[str, Any]:
    """The recipe's own value of each searched key (the pair: its first hint pair, or the
    models' default), when the space holds it: the first trial."""
    values = {}
    for key, dim in space.items():
        if key == "pair":
            value = _recipe_pair(cfg)
        else:
            value = cfg
            for part in key.split("."):
                value = getattr(value, part, None)
        if value is not None and dim.contains(value):
            values[key] = value
    return values


def _recipe_pair(cfg: Config) -> str | None:
    """The pair the recipe trains: its first hints.pairs entry, else the models' default."""
    if cfg.hints.pairs:
        return f"{cfg.hints.pairs[0][0]}/{cfg.hints.pairs[0][1]}"
    try:
        row = next(r for r in ranked_pairs(cfg) if r["default"])
    except (FitnetsError, StopIteration):
        return None
    return f"{row['guided']}/{row['hint']}"


# --------------------------------------------------------------------------- the study


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

    def dims(self) -> dict[str, Dim]:
        return {d["key"]: Dim(**d) for d in self.space}


def default_storage(search_dir: Path) -> str:
    return f"sqlite:///{(Path(search_dir) / 'study.db').resolve()}"


def _storage(url: str):
    optuna = _optuna()
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as e:  # a bad URL, a missing driver, a server that does not answer
        raise FitnetsError(f"cannot open the search storage '{url}': "
                           f"{' '.join(str(e).split())[:300]}") from None


def _sampler(spec: Spec, salt: int):
    optuna = _optuna()
    return optuna.samplers.TPESampler(seed=spec.seed * 1000 + salt,
                                      n_startup_trials=spec.startup_trials,
                                      constant_liar=True)


def _pruner(spec: Spec):
    optuna = _optuna()
    return optuna.pruners.MedianPruner(n_startup_trials=spec.prune_after, n_warmup_steps=0)


def open_study(spec: Spec, salt: int = 0):
    optuna = _optuna()
    return optuna.load_study(study_name=spec.study, storage=_storage(spec.storage),
                             sampler=_sampler(spec, salt), pruner=_pruner(spec))


def _comparable(cfg_dict: dict) -> dict:
    flat = _flatten(cfg_dict)
    return {k: v for k, v in flat.items()
            if not any(k == p or k.startswith(p + ".") for p in _LOCAL_KEYS)}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("max_norm", "lr_scale"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def create_or_join(spec: Spec, base: Config) -> tuple[Any, bool]:
    """Create the study, or join the one of that name in the storage after checking that it
    searches the same space, on the same budget, from the same recipe."""
    optuna = _optuna()
    storage = _storage(spec.storage)
    study = optuna.create_study(study_name=spec.study, storage=storage, direction="maximize",
                                sampler=_sampler(spec, 0), pruner=_pruner(spec),
                                load_if_exists=True)
    mine = {"space": spec.space, "budget": spec.budget, "base": _comparable(to_dict(base))}
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


# --------------------------------------------------------------------------- a worker


@contextmanager
def _ask_lock(search_dir: Path):
    """One process at a time asks for (or reclaims) a trial, on this machine."""
    with open(search_dir / ".ask.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim_abandoned(study) -> Any:
    """A trial left RUNNING by a killed process of this machine, claimed for this one."""
    optuna = _optuna()
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = t.user_attrs.get("worker") or {}
        if owner.get("host") == host and owner.get("pid") != os.getpid() \
                and not _alive(int(owner.get("pid", 0))):
            trial = optuna.trial.Trial(study, t._trial_id)
            trial.set_user_attr("worker", {"host": host, "pid": os.getpid()})
            trial.set_user_attr("resumed", t.user_attrs.get("resumed", 0) + 1)
            return trial
    return None


def _next_trial(study, spec: Spec, search_dir: Path) -> Any:
    optuna = _optuna()
    S = optuna.trial.TrialState
    with _ask_lock(search_dir):
        trial = _claim_abandoned(study)
        if trial is not None:
            return trial
        started = study.get_trials(deepcopy=False, states=(S.COMPLETE, S.PRUNED, S.FAIL,
                                                           S.RUNNING))
        if len(started) >= spec.trials:
            return None
        trial = study.ask()
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
        return trial


def _reporter(trial):
    optuna = _optuna()

    def on_epoch(record: dict) -> None:
        if record.get("kind") != "classifier" or METRIC not in record:
            return
        trial.report(record[METRIC], record["epoch"])
        trial.set_user_attr("last_epoch", record["epoch"])
        if record.get("stalled"):
            trial.set_user_attr("stalled", True)
            raise optuna.TrialPruned(f"stalled at chance in epoch {record['epoch']}")
        if trial.should_prune():
            raise optuna.TrialPruned(f"below the median at epoch {record['epoch']}")

    return on_epoch


def run_trial(study, trial, spec: Spec, search_dir: Path, base: Config) -> str:
    """Run one trial (or continue it from its checkpoint) and tell the study; returns the
    trial's final state name."""
    optuna = _optuna()
    from fitnets.run import Hooks, run

    dims = spec.dims()
    params = {key: dim.suggest(trial) for key, dim in dims.items()}
    run_dir = search_dir / "trials" / f"{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir.resolve()))
    trial.set_user_attr("values", _settings(params))
    resume = (run_dir / "config.yaml").is_file()
    print(f"trial {trial.number}: {'continuing' if resume else 'starting'} {run_dir} with "
          f"{json.dumps(params)}", flush=True)
    state, value = optuna.trial.TrialState.FAIL, None
    try:
        cfg = _config_with(base, params, spec.budget, str(run_dir))
        summary = run(cfg, spec.command, run_dir, resume=resume, verbose=True,
                      hooks=Hooks(on_epoch=_reporter(trial), held_out_only=True))
    except optuna.TrialPruned as e:
        trial.set_user_attr("pruned", str(e))
        state = optuna.trial.TrialState.PRUNED
    except FitnetsError as e:
        trial.set_user_attr("error", " ".join(str(e).split()))
        print(f"trial {trial.number} failed: {e}", flush=True)
    except Exception as e:  # a bug or a crash in one trial must not end the search
        trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:1000])
        traceback.print_exc()
    else:
        trial.set_user_attr("wall_time_s", summary["wall_time_s"])
        trial.set_user_attr("params_count", summary["params"])
        if summary["stalled"]:
            trial.set_user_attr("stalled", True)
            state = optuna.trial.TrialState.PRUNED
        else:
            state, value = optuna.trial.TrialState.COMPLETE, summary["val_acc"]
    study.tell(trial, value, state=state)
    print(f"trial {trial.number}: {state.name}" + (f" val_acc {value:.4f}" if value else ""),
          flush=True)
    return state.name


def work(search_dir: Path, index: int = 0) -> int:
    """A worker: run trials of the study until it has ``trials`` started ones."""
    search_dir = Path(search_dir)
    spec = load_spec(search_dir)
    base = make_config(search_dir / BASE)
    study = open_study(spec, salt=index + 1 + os.getpid() % 997)
    while True:
        trial = _next_trial(study, spec, search_dir)
        if trial is None:
            return 0
        run_trial(study, trial, spec, search_dir, base)


# --------------------------------------------------------------------------- the command


def load_spec(search_dir: Path) -> Spec:
    path = Path(search_dir) / SPEC
    if not path.is_file():
        raise FitnetsError(f"'{search_dir}' is not a search directory (no {SPEC}); start one "
                           "with fitnets search RECIPE --out DIR.")
    spec = Spec(**json.loads(path.read_text()))
    if not spec.storage:  # this directory's study.db, wherever the directory now is
        spec.storage = default_storage(search_dir)
    return spec


def prepare(recipe: str | None, overrides: list[str], out: Path, *, trials: int | None,
            storage: str | None, study: str | None, space_texts: list[str],
            budget_texts: list[str], parallel: int) -> tuple[Spec, list[dict], bool]:
    """Write the search directory (search.json, base.yaml) and create or join the study;
    returns the spec, the ranked pair rows and whether an existing study was joined."""
    out = Path(out)
    if (out / SPEC).exists():
        raise FitnetsError(f"'{out}' already holds a search: continue it with "
                           f"fitnets search --resume {out}, or choose another --out.")
    if recipe is not None and Path(recipe).suffix not in (".yaml", ".yml"):
        raise FitnetsError(f"expected a YAML recipe, got '{recipe}'.")
    base = make_config(recipe, overrides + ["out=null"])
    if base.method == "backprop" and not space_texts and not base.search.space:
        raise FitnetsError("method=backprop has no teacher, pairs, tau or lambda to search; "
                           "search a distillation recipe (method=fitnet, kd or joint), or "
                           "give keys with --space.")
    extra = {}
    for text in space_texts:
        if "=" not in text:
            raise FitnetsError(f"--space takes KEY=CHOICES, e.g. kd.tau=2,3,4 or "
                               f"kd.tau=1:8:log, got '{text}'.")
        key, value = text.split("=", 1)
        extra[key.strip()] = value
    space, rows = build_space(base, base.search.pairs, extra)
    budget = {**base.search.budget, **parse_overrides(budget_texts)}
    both = sorted({"hints.pairs" if k == "pair" else k for k in space} & set(budget))
    if both:
        raise FitnetsError(f"{', '.join(both)} is both searched and set by the budget; drop "
                           "it from one of them.")
    _config_with(base, recipe_values(base, space), budget)  # the budget's keys are checked
    n = trials or base.search.trials
    if n < 1:
        raise FitnetsError(f"--trials must be >= 1, got {n}.")
    spec = Spec(command="distill", trials=n, storage=storage or default_storage(out),
                study=study or (Path(recipe).stem if recipe else "fitnets-search"),
                space=[asdict(d) for d in space.values()], budget=budget, seed=base.seed,
                startup_trials=max(2, min(10, n // 3)), prune_after=max(2, parallel))
    out.mkdir(parents=True, exist_ok=True)
    (out / BASE).write_text(dump_yaml(base))
    study_obj, joined = create_or_join(spec, base)
    if not joined and not study_obj.trials:
        first = recipe_values(base, space)
        if first:  # the recipe's own settings, measured on the same budget
            study_obj.enqueue_trial(first, user_attrs={"recipe": True})
    # the default storage is written as "": the directory's own study.db, so that a search
    # directory can be moved or copied and still be resumed and reported
    (out / SPEC).write_text(json.dumps({**asdict(spec), "storage": storage or ""}, indent=2)
                            + "\n")
    return spec, rows, joined


def describe_space(spec: Spec, rows: list[dict]) -> str:
    lines = [f"study '{spec.study}' in {_show(spec.storage)}: {spec.trials} trials, TPE sampling, "
             "median pruning on validation accuracy per KD epoch (a stalled trial at once)"]
    for key, dim in spec.dims().items():
        lines.append(f"  {key:24s} {dim.describe()}")
    if rows:
        lines.append("  pairs by distance from the middle of both networks (fitnets layers):")
        for r in rows:
            shape = "x".join(map(str, r["guided_shape"])) + " -> " + "x".join(
                map(str, r["hint_shape"]))
            lines.append(f"    {r['guided']}/{r['hint']:10s} {shape:24s} regressor "
                         f"{r['kind']} {r['params'] or 0:,} params"
                         + ("  (default pair)" if r["default"] else ""))
    if spec.budget:
        lines.append("  budget of each trial: " + ", ".join(f"{k}={v}"
                                                          for k, v in spec.budget.items()))
    return "\n".join(lines)


def _show(url: str) -> str:
    """A storage URL for people: a SQLite file relative to the working directory."""
    if url.startswith("sqlite:///"):
        return "sqlite:///" + os.path.relpath(url[len("sqlite:///"):])
    return url


def _workers(search_dir: Path, parallel: int) -> list[subprocess.Popen]:
    logs = search_dir / "logs"
    logs.mkdir(exist_ok=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // parallel)
    procs = []
    for k in range(parallel):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "FITNETS_SEARCH_THREADS": str(threads)}
        log = open(logs / f"worker-{k}.log", "a")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "fitnets.search", str(search_dir), str(k)],
            stdout=log, stderr=subprocess.STDOUT, env=env))
        log.close()
    return procs


def _watch(spec: Spec, procs: list[subprocess.Popen], verbose: bool) -> None:
    """Print each trial as it ends, with a progress bar over the study's trials."""
    from tqdm import tqdm

    study = open_study(spec)
    seen: set[int] = set()
    bar = tqdm(total=spec.trials, desc="trials", unit="trial", disable=None if verbose else True)

    def poll() -> None:
        ended = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        for t in sorted(ended, key=lambda t: t.number):
            if t.number in seen:
                continue
            seen.add(t.number)
            bar.update(1)
            if verbose:
                tqdm.write(_trial_line(t))

    poll()
    while any(p.poll() is None for p in procs):
        time.sleep(1.0)
        poll()
    poll()
    bar.close()


def _trial_line(t) -> str:
    params = ", ".join(f"{_label(k)} {_fmt(v)}" for k, v in t.params.items())
    return f"trial {t.number:3d} {_state(t):22s} {params}"


def search(recipe: str | None, overrides: list[str], out: str | Path, *, trials: int | None = None,
           parallel: int = 1, storage: str | None = None, study: str | None = None,
           space: list[str] = (), budget: list[str] = (), resume: bool = False,
           verbose: bool = True) -> Path:
    """``fitnets search``: prepare (or reopen with ``resume``) the search directory, run
    ``parallel`` worker processes to the end, then write results.md and best.yaml."""
    out = Path(out)
    if parallel < 1:
        raise FitnetsError(f"--parallel must be >= 1, got {parallel}.")
    if resume:
        if recipe is not None or overrides or space or budget:
            raise FitnetsError("--resume takes everything from the search directory; drop "
                               "the recipe, overrides, --space and --budget.")
        spec = load_spec(out)
        if trials is not None and trials != spec.trials:
            raise FitnetsError(f"--resume keeps the search's {spec.trials} trials; drop "
                               "--trials.")
        _storage(spec.storage)
        rows: list[dict] = []
        say = f"resuming the search in {out}"
    else:
        spec, rows, joined = prepare(recipe, list(overrides), out, trials=trials,
                                     storage=storage, study=study, space_texts=list(space),
                                     budget_texts=list(budget), parallel=parallel)
        say = (f"joined the existing study '{spec.study}'" if joined
               else f"search directory {out}")
    if verbose:
        print(say)
        print(describe_space(spec, rows))
        print(f"{parallel} worker process(es); their output: {out / 'logs'}")
    procs = _workers(out, parallel)
    try:
        _watch(spec, procs, verbose)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        print(f"\nfitnets: search interrupted; continue it with fitnets search --resume {out} "
              "(finished trials are kept; a trial cut short continues from its checkpoint).",
              file=sys.stderr)
        raise SystemExit(130) from None
    bad = [k for k, p in enumerate(procs) if p.returncode != 0]
    table = write_results(out)
    if verbose:
        print(table)
        print(f"wrote {out / 'results.md'}" + (
            f" and {out / 'best.yaml'} (train it: fitnets distill {out / 'best.yaml'})"
            if (out / "best.yaml").exists() else ""))
    if bad:
        raise FitnetsError(f"worker process(es) {bad} ended with an error; see "
                           f"{out / 'logs'}. Continue with fitnets search --resume {out}.")
    return out


# --------------------------------------------------------------------------- the answer

_LABELS = {"pair": "pair", "hints.regressor": "regressor", "kd.tau": "tau",
           "kd.lambda_init": "lambda", "hints.stage.optim.lr": "hint lr",
           "hints.beta": "beta"}


def _label(key: str) -> str:
    return _LABELS.get(key, key)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _state(t) -> str:
    name = t.state.name
    last = max(t.intermediate_values) if t.intermediate_values else None
    if name == "COMPLETE":
        return f"val {100 * t.value:.2f}%"
    if name == "PRUNED":
        why = "stalled" if t.user_attrs.get("stalled") else "pruned"
        v = t.intermediate_values.get(last) if last is not None else None
        return f"{why} ep {last} " + (f"({100 * v:.2f}%)" if v is not None else "")
    if name == "FAIL":
        return "failed"
    return name.lower()


def ranked(study) -> list:
    """Complete trials by validation accuracy, then pruned ones by their last value, then
    the rest."""
    def key(t):
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values \
            else -math.inf
        order = {"COMPLETE": 0, "PRUNED": 1}.get(t.state.name, 2)
        return (order, -(t.value if t.value is not None else last), t.number)
    return sorted(study.get_trials(deepcopy=False), key=key)


def results_table(study, spec: Spec) -> str:
    keys = list(spec.dims())
    head = ["rank", "trial"] + [_label(k) for k in keys] + ["validation", "KD epochs", "time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, t in enumerate(ranked(study), 1):
        secs = t.duration.total_seconds() if t.duration is not None else None
        cells = [str(i), str(t.number) + (" (recipe)" if t.user_attrs.get("recipe") else "")]
        cells += [_fmt(t.params.get(k, "-")) for k in keys]
        cells += [_state(t), str(t.user_attrs.get("last_epoch", "-")),
                  f"{secs:.0f} s" if secs is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    errors = [f"- trial {t.number} failed: {t.user_attrs['error']}" for t in study.trials
              if t.state.name == "FAIL" and t.user_attrs.get("error")]
    return "\n".join(lines + ([""] + errors if errors else []))


def write_best(search_dir: Path, study, spec: Spec) -> Path | None:
    """best.yaml: base.yaml with the best complete trial's values, without the budget."""
    optuna = _optuna()
    done = [t for t in study.get_trials(deepcopy=False,
                                        states=(optuna.trial.TrialState.COMPLETE,))]
    if not done:
        return None
    best = max(done, key=lambda t: (t.value, -t.number))
    base = make_config(Path(search_dir) / BASE)
    cfg = _config_with(base, best.params, {})
    head = (f"# fitnets search: the best of {len(done)} complete trials of study "
            f"'{spec.study}' (trial {best.number}, validation accuracy "
            f"{100 * best.value:.2f}% on the search's budget: "
            f"{', '.join(f'{k}={v}' for k, v in spec.budget.items()) or 'the recipe'}).\n"
            f"# Searched: {', '.join(f'{_label(k)} {_fmt(v)}' for k, v in best.params.items())}"
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
             f"storage {_show(spec.storage)}", "", "```", describe_space(spec, []), "```", "",
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


def _worker_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m fitnets.search",
                                description="one worker of a fitnets search (started by it)")
    p.add_argument("search_dir", type=Path)
    p.add_argument("index", type=int, nargs="?", default=0)
    args = p.parse_args(argv)
    threads = os.environ.get("FITNETS_SEARCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    try:
        return work(args.search_dir, args.index)
    except FitnetsError as e:
        print("fitnets: error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the trial stays RUNNING: --resume continues it
        print("worker interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(_worker_main(sys.argv[1:]))
