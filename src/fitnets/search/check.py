"""The refusals a search makes before its first trial: whatever would make trials fail or
mislead (no validation split, a pair naming a layer the student or teacher lacks, a pair
the regressor cannot map, a teacher without weights, a value the config refuses) is named
with the choices there are, instead of every trial failing the same way. Needs no Optuna."""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fitnets.config import Config
from fitnets.distill import methods
from fitnets.errors import FitnetsError
from fitnets.search.probe import DataFacts, data_facts, nets_of
from fitnets.search.space import Dim, config_with

MAX_COMBINATIONS = 2000  # beyond: each key's values alone, and pairs x regressor kinds


def combinations(space: dict[str, Dim]) -> list[dict[str, Any]]:
    """Every trial's values the check builds: each combination of the choices, with the
    ranges at their low and at their high ends (too many: each key's values alone, with
    every pair and regressor kind together)."""
    cats = {k: d.choices for k, d in space.items() if d.choices is not None}
    ranges = {k: d for k, d in space.items() if d.choices is None}
    ends = [{k: getattr(d, end) for k, d in ranges.items()} for end in ("low", "high")]
    count = 2
    for c in cats.values():
        count *= len(c)
    if count <= MAX_COMBINATIONS:
        return [{**dict(zip(cats, values)), **end}
                for values in itertools.product(*cats.values()) for end in ends]
    coupled = [k for k in ("pair", "hints.regressor") if k in cats]
    out = [dict(zip(coupled, v)) for v in itertools.product(*(cats[k] for k in coupled))]
    return out + [{k: v} for k, d in space.items() if k not in coupled for v in d.corners()]


def check_trials(base: Config, space: dict[str, Dim], budget: dict[str, Any],
                 origin: dict[str, str]) -> DataFacts:
    """Build every trial's config (:func:`combinations`) and check what its run would
    meet; returns the base data's facts. ``origin``: where each searched key was given
    (--space, the recipe's search.space), for the messages."""
    configs = [(values, config_with(base, values, budget)) for values in combinations(space)]
    facts = {}
    for values, cfg in configs:
        key = json.dumps(asdict(cfg.data), sort_keys=True, default=str)
        if key not in facts:
            facts[key] = _check_data(cfg, values, budget)
    seen = set()
    for values, cfg in configs:
        _check_teacher(cfg)
        if not methods.offer(cfg.method).pairs:
            continue
        key = json.dumps([values.get("pair"), asdict(cfg.hints), asdict(cfg.student),
                          asdict(cfg.teacher), asdict(cfg.data)], default=str)
        if key in seen:
            continue
        seen.add(key)
        _check_pairs(cfg, values, origin, facts[json.dumps(asdict(cfg.data), sort_keys=True,
                                                           default=str)])
    return facts[json.dumps(asdict(configs[0][1].data), sort_keys=True, default=str)]


def _check_data(cfg: Config, values: dict, budget: dict) -> DataFacts:
    facts = data_facts(cfg.data)
    if facts.val == 0:
        said = [f"{k}={v}" for k, v in {**budget, **values}.items() if k.startswith("data.")]
        raise FitnetsError(
            "a search selects on a validation split, never the test set, but data.val_size="
            f"{cfg.data.val_size} leaves {cfg.data.name} without one"
            + (f" (set by the budget or the space: {', '.join(said)})" if said else "")
            + ": drop it, or set data.val_size=N (training images held out; the default "
            "holds out the paper's 10k for MNIST and CIFAR, 10% of the others).")
    if facts.train == 0:
        raise FitnetsError(f"data {cfg.data.name} leaves no training images "
                           f"(data.train_limit={cfg.data.train_limit}).")
    return facts


def _check_teacher(cfg: Config) -> None:
    t = cfg.teacher
    if not methods.needs_teacher("distill", cfg) or t.pretrained or t.name.startswith("hf:"):
        return
    if not t.weights:
        raise FitnetsError("every trial distills from a trained teacher: set teacher.weights="
                           "RUN_DIR (a finished `fitnets train` run) or a state-dict file.")
    if "://" not in t.weights and not Path(t.weights).expanduser().exists():
        raise FitnetsError(f"teacher.weights={t.weights} does not exist: give a finished "
                           "`fitnets train` run directory or a state-dict file.")


def _check_pairs(cfg: Config, values: dict, origin: dict[str, str], facts: DataFacts) -> None:
    from fitnets.distill.hint import hint_pairs

    nets = nets_of(cfg, facts)
    if "pair" in values:
        g, h = values["pair"].split("/")
        where = f"{origin.get('pair', 'the searched pair')} '{g}/{h}'"
        pairs = [(g, h)]
    else:
        pairs = hint_pairs(cfg, nets.student, nets.teacher)
        where = "the recipe's hints.pairs" if cfg.hints.pairs else "the models' default pair"
    for g, h in pairs:
        here = where if "pair" in values else f"{where} [{g}, {h}]"
        nets.check_layers(g, h, here)
        nets.check_regressor(cfg, (g, h), here)
