"""``fitnets search``: prepare (or reopen) the search directory, refuse up front what cannot
work, run the worker processes to the end, then write results.md and best.yaml."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from fitnets.config import dump_yaml, make_config
from fitnets.config_yaml import parse_overrides
from fitnets.distill import methods
from fitnets.errors import FitnetsError
from fitnets.search.check import check_trials
from fitnets.search.results import complete, describe_space, trial_line, write_results
from fitnets.search.space import build_space, config_with, recipe_values
from fitnets.search.study import (
    BASE,
    SPEC,
    Spec,
    create_or_join,
    default_storage,
    load_spec,
    metric_of,
    open_study,
    save_spec,
    update_spec,
)
from fitnets.search.study import storage as open_storage

NO_TRIAL_COMPLETED = 3  # the exit code of a search that ran and completed no trial


def prepare(recipe: str | None, overrides: list[str], out: Path, *, trials: int | None,
            storage: str | None, study: str | None, space_texts: list[str],
            budget_texts: list[str], parallel: int) -> tuple[Spec, list[dict], bool]:
    """Check everything a trial would meet, then write the search directory (search.json,
    base.yaml) and create or join the study; returns the spec, the pair rows and whether an
    existing study was joined. Nothing is written when a check refuses."""
    out = Path(out)
    if (out / SPEC).exists():
        raise FitnetsError(f"'{out}' already holds a search: continue it with "
                           f"fitnets search --resume {out}, or choose another --out.")
    if recipe is not None and Path(recipe).suffix not in (".yaml", ".yml"):
        raise FitnetsError(f"expected a YAML recipe, got '{recipe}'.")
    base = make_config(recipe, overrides + ["out=null"])
    if not methods.offer(base.method) and not space_texts and not base.search.space:
        raise FitnetsError(f"method={base.method} offers nothing to search (no teacher, hint "
                           f"pairs, tau or lambda): search a recipe of method "
                           f"{', '.join(methods.offering())}, or give keys with --space.")
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
    first = recipe_values(base, space)
    config_with(base, first, budget)  # the budget's keys are checked
    origin = {k: f"--space {k}" if k in extra else f"the recipe's search.space {k}"
              for k in {**base.search.space, **extra}}
    facts = check_trials(base, space, budget, origin)
    n = trials or base.search.trials
    if n < 1:
        raise FitnetsError(f"--trials must be >= 1, got {n}.")
    spec = Spec(command="distill", trials=n, storage=storage or default_storage(out),
                study=study or (Path(recipe).stem if recipe else "fitnets-search"),
                space=[asdict(d) for d in space.values()], budget=budget, seed=base.seed,
                startup_trials=max(2, min(10, n // 3)), prune_after=max(2, parallel),
                parallel=parallel, train_size=facts.train, metric=metric_of(base))
    out.mkdir(parents=True, exist_ok=True)
    (out / BASE).write_text(dump_yaml(base))
    study_obj, joined = create_or_join(spec, base)
    if not joined and not study_obj.trials:
        if "pair" in space and "pair" not in first:  # no trial is the recipe's then
            print("the recipe's own settings are not a trial: its hint pair is not among the "
                  "searched pairs", flush=True)
        elif first:  # the recipe's own settings, measured on the same budget (its values
            # outside the space sampled)
            study_obj.enqueue_trial(first, user_attrs={"recipe": True})
    save_spec(out, spec, storage)
    return spec, rows, joined


def _workers(search_dir: Path, parallel: int) -> list[subprocess.Popen]:
    logs = search_dir / "logs"
    logs.mkdir(exist_ok=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = int(os.environ.get("OMP_NUM_THREADS") or cores or 1)  # a budget set from outside
    threads = max(1, cores // parallel)
    procs = []
    for k in range(parallel):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "FITNETS_SEARCH_THREADS": str(threads)}
        log = open(logs / f"worker-{k}.log", "a")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "fitnets.search.worker", str(search_dir), str(k)],
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
                tqdm.write(trial_line(t, spec))

    poll()
    while any(p.poll() is None for p in procs):
        time.sleep(1.0)
        poll()
    poll()
    bar.close()


def search(recipe: str | None, overrides: list[str], out: str | Path, *, trials: int | None = None,
           parallel: int | None = None, storage: str | None = None, study: str | None = None,
           space: list[str] = (), budget: list[str] = (), resume: bool = False,
           verbose: bool = True) -> Path:
    """``fitnets search``: prepare (or reopen with ``resume``) the search directory, run
    ``parallel`` worker processes (default 1; on resume, the search's own) to the end, then
    write results.md and best.yaml. Exits with NO_TRIAL_COMPLETED when no trial completed."""
    out = Path(out)
    if parallel is not None and parallel < 1:
        raise FitnetsError(f"--parallel must be >= 1, got {parallel}.")
    if resume:
        if recipe is not None or overrides or space or budget:
            raise FitnetsError("--resume takes everything from the search directory; drop "
                               "the recipe, overrides, --space and --budget.")
        spec = load_spec(out)
        if trials is not None and trials != spec.trials:
            raise FitnetsError(f"--resume keeps the search's {spec.trials} trials; drop "
                               "--trials.")
        open_storage(spec.storage)
        if parallel is not None and parallel != spec.parallel:  # kept for the next --resume
            spec.parallel = parallel
            update_spec(out, parallel=parallel)
        rows: list[dict] = []
        say = f"resuming the search in {out}"
    else:
        spec, rows, joined = prepare(recipe, list(overrides), out, trials=trials,
                                     storage=storage, study=study, space_texts=list(space),
                                     budget_texts=list(budget), parallel=parallel or 1)
        say = (f"joined the existing study '{spec.study}'" if joined
               else f"search directory {out}")
    if verbose:
        print(say)
        print(describe_space(spec, rows))
        print(f"{spec.parallel} worker process(es); their output: {out / 'logs'}")
    procs = _workers(out, spec.parallel)
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
    if not complete(open_study(spec)):
        print(f"fitnets: no trial of the search completed (each was pruned, stalled or "
              f"failed: {out / 'results.md'} says which), so there is no best.yaml.",
              file=sys.stderr)
        raise SystemExit(NO_TRIAL_COMPLETED)
    return out
