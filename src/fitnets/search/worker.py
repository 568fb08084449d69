"""A worker process: claims trials one at a time (a lock per study on this machine), runs
each as an ordinary run, reports its validation accuracy (a language model's: validation
perplexity) per KD epoch and tells the study how it ended.

``python -m fitnets.search.worker SEARCH_DIR [INDEX]`` (started by ``fitnets search``).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import math
import os
import socket
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fitnets import stall
from fitnets.config import Config, make_config
from fitnets.errors import FitnetsError
from fitnets.search.space import config_with, settings
from fitnets.search.study import BASE, Spec, load_optuna, load_spec, open_study, sampler

# The median rule judges a trial only late in its KD stage, measured on digits (3 searches
# of 8 trials, 8 or 15 KD epochs, nothing pruned, the rule replayed on the recorded
# accuracies): before 67-75% of the stage it would have pruned one of the two best final
# trials in every search (one below the median with 87.33% in epoch 10 of 15 ended at
# 97.33%, tied best); from 80% on it pruned none. The users' case: a trial pruned at 44.78%
# in epoch 1, above the eventual winner's own 43.37% there. And never before the stall
# guard may judge.
WARMUP = 0.8  # the fraction of the stage's epochs before the median rule is asked
OWNERLESS_AFTER_S = 60.0  # a RUNNING trial with no owner for this long was left by a kill


def lock_file(storage: str) -> Path:
    """The file every process of one study locks before it asks for a trial: beside a SQLite
    database (each process sees it there, whatever its own --out), else one per storage URL
    in this machine's temporary directory. Keyed on the search directory instead, two
    commands joining one study from two --out directories once started 9 trials of 8."""
    if storage.startswith("sqlite:///"):
        db = Path(storage[len("sqlite:///"):])
        return db.with_name(db.name + ".ask.lock")
    key = hashlib.sha256(storage.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"fitnets-search-{key}.ask.lock"


@contextmanager
def ask_lock(storage: str):
    """One process at a time asks for (or reclaims) a trial of the study, on this machine."""
    path = lock_file(storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
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


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def claim_abandoned(study) -> Any:
    """A trial left RUNNING by a process of this machine that died, or by a process killed
    between asking for it and recording itself as its owner; claimed for this one."""
    optuna = load_optuna()
    host, now = socket.gethostname(), time.time()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = t.user_attrs.get("worker")
        if owner is None:
            started = t.datetime_start.timestamp() if t.datetime_start else now
            if now - started < OWNERLESS_AFTER_S:
                continue  # another machine's process may be recording itself right now
        elif owner.get("host") != host or owner.get("pid") == os.getpid() \
                or _alive(int(owner.get("pid", 0))):
            continue
        trial = optuna.trial.Trial(study, t._trial_id)
        trial.set_user_attr("worker", _owner())
        trial.set_user_attr("resumed", t.user_attrs.get("resumed", 0) + 1)
        return trial
    return None


def next_trial(study, spec: Spec, search_dir: Path) -> Any:
    """The next trial for this process (an abandoned one first), its owner recorded and its
    values sampled at once; None when the study has all its trials."""
    optuna = load_optuna()
    S = optuna.trial.TrialState
    with ask_lock(spec.storage):
        trial = claim_abandoned(study)
        if trial is None:
            trials = study.get_trials(deepcopy=False)
            started = [t for t in trials if t.state in (S.COMPLETE, S.PRUNED, S.FAIL, S.RUNNING)]
            if len(started) >= spec.trials:
                return None
            study.sampler = sampler(spec, len(trials))  # the seed and the trial's number
            trial = study.ask()
            trial.set_user_attr("worker", _owner())
        for dim in spec.dims().values():
            dim.suggest(trial)
        return trial


def may_prune(epoch: int, epochs: int, steps_per_epoch: int | None) -> bool:
    """Whether the median rule may judge a trial after ``epoch`` of its ``epochs``-epoch
    stage: past the warm-up, before its last epoch, and once the stall guard may judge
    (fitnets.stall.ready: enough optimiser steps; unknown steps: never)."""
    if steps_per_epoch is None or epoch >= epochs or epoch < math.ceil(WARMUP * epochs):
        return False
    return stall.ready(epoch * steps_per_epoch, epochs * steps_per_epoch)


def _reporter(trial, epochs: int, steps_per_epoch: int | None, metric: str):
    optuna = load_optuna()

    def on_epoch(record: dict) -> None:
        if record.get("kind") != "classifier" or metric not in record:
            return
        epoch = record["epoch"]
        trial.report(record[metric], epoch)
        trial.set_user_attr("last_epoch", epoch)
        # a stage at chance is not pruned here: the stall guard's verdict may still change;
        # the trial ends, and its summary's final verdict decides (run_trial)
        # the trainer counts the stage's steps (record["step"]); else from the data's size
        per_epoch = record["step"] // epoch if record.get("step") else steps_per_epoch
        if may_prune(epoch, epochs, per_epoch) and trial.should_prune():
            raise optuna.TrialPruned(f"below the median at epoch {epoch}")

    return on_epoch


def _steps_per_epoch(cfg: Config, spec: Spec, base_data: dict) -> int | None:
    train = spec.train_size
    if asdict(cfg.data) != base_data:  # a searched data key: this trial's own sizes
        from fitnets.search.probe import data_facts

        train = data_facts(cfg.data).train
    return math.ceil(train / cfg.data.batch_size) if train else None


def run_trial(study, trial, spec: Spec, search_dir: Path, base: Config) -> str:
    """Run one trial (or continue it from its checkpoint) and tell the study; returns the
    trial's final state name."""
    optuna = load_optuna()
    from fitnets.run import Hooks, run

    params = {key: dim.suggest(trial) for key, dim in spec.dims().items()}
    run_dir = search_dir / "trials" / f"{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir.resolve()))
    trial.set_user_attr("values", settings(params))
    resume = (run_dir / "config.yaml").is_file()
    print(f"trial {trial.number}: {'continuing' if resume else 'starting'} {run_dir} with "
          f"{json.dumps(params)}", flush=True)
    state, value = optuna.trial.TrialState.FAIL, None
    try:
        cfg = config_with(base, params, spec.budget, str(run_dir))
        per_epoch = _steps_per_epoch(cfg, spec, asdict(config_with(base, {}, spec.budget).data))
        summary = run(cfg, spec.command, run_dir, resume=resume, verbose=True,
                      hooks=Hooks(on_epoch=_reporter(trial, cfg.train.epochs, per_epoch,
                                                             spec.metric),
                                  held_out_only=True))
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
        if summary["stalled"]:  # the stall guard's final verdict: it ended at chance
            trial.set_user_attr("stalled", True)
            state = optuna.trial.TrialState.PRUNED
        else:
            state, value = optuna.trial.TrialState.COMPLETE, summary[spec.metric]
    study.tell(trial, value, state=state)
    print(f"trial {trial.number}: {state.name}"
          + (f" {spec.metric} {value:.4f}" if value is not None else ""), flush=True)
    return state.name


def work(search_dir: Path, index: int = 0) -> int:
    """A worker: run trials of the study until it has ``trials`` started ones."""
    search_dir = Path(search_dir)
    spec = load_spec(search_dir)
    base = make_config(search_dir / BASE)
    study = open_study(spec)
    while True:
        trial = next_trial(study, spec, search_dir)
        if trial is None:
            return 0
        run_trial(study, trial, spec, search_dir, base)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m fitnets.search.worker",
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
    raise SystemExit(main(sys.argv[1:]))
