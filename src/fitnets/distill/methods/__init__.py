"""The methods, one module each: a method turns the config and the built networks into the
list of stages a run trains, and says whether it needs a teacher. Nothing outside this
package knows a method's name; add a method by adding a module and its name to
``fitnets.names.METHODS``.

A method module has ``LABEL`` (its row in the demo's table), ``NEEDS_TEACHER``,
``SEARCH`` (an :class:`Offer`: what ``fitnets search`` may search for it) and
``stages(setup) -> list[StagePlan]``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from torch import nn

from fitnets import names
from fitnets.config import Config
from fitnets.data.training import TrainingData
from fitnets.distill.teacher import Teacher
from fitnets.errors import FitnetsError
from fitnets.stage import StagePlan


@dataclass(frozen=True)
class Range:
    """A config key the method reads, searched from ``low`` to ``high`` on a log scale;
    ``relative``: the bounds are factors of the recipe's value."""

    key: str
    low: float
    high: float
    relative: bool = False


@dataclass(frozen=True)
class Offer:
    """What a method offers ``fitnets search``: ``pairs`` (it trains (guided, hint) pairs, so
    the search may choose the pair and the regressor kind) and ``ranges``, the keys it reads,
    with the range searched for each. A method that offers nothing is searched only on the
    keys a user names (--space)."""

    pairs: bool = False
    ranges: tuple[Range, ...] = ()

    def __bool__(self) -> bool:
        return self.pairs or bool(self.ranges)


@dataclass
class Setup:
    """What a method builds its stages from."""

    cfg: Config
    student: nn.Module
    teacher: Teacher | None  # None when the method needs none
    data: TrainingData
    input_shape: tuple


# one module per name of fitnets.names.METHODS (the config's choices read the same tuple)
METHODS: dict[str, ModuleType] = {
    name: importlib.import_module(f"{__name__}.{name}") for name in names.METHODS}
COMPARED = ("backprop", "kd", "fitnet")  # the demo's comparison, in its table's order


def get(name: str) -> ModuleType:
    if name not in METHODS:
        raise FitnetsError(f"unknown method '{name}'; choose one of {', '.join(METHODS)}.")
    return METHODS[name]


def offer(name: str) -> Offer:
    """What method ``name`` offers ``fitnets search``."""
    return get(name).SEARCH


def offering_pairs() -> list[str]:
    """The methods whose hint pairs a search may choose."""
    return [n for n, m in METHODS.items() if m.SEARCH.pairs]


def offering() -> list[str]:
    """The methods that offer something to search."""
    return [n for n, m in METHODS.items() if m.SEARCH]


def needs_teacher(command: str, cfg: Config) -> bool:
    """Whether the run loads a teacher (``fitnets train`` never does)."""
    return command != "train" and get(cfg.method).NEEDS_TEACHER


def plan(command: str, setup: Setup) -> list[StagePlan]:
    """The stages of the run: ``fitnets train`` is back-propagation on the labels (its
    stage is called "train"), ``fitnets distill`` the configured method's stages."""
    if command == "train":
        return METHODS["backprop"].stages(setup, name="train")
    return get(setup.cfg.method).stages(setup)
