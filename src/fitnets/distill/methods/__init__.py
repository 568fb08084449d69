"""The methods, one module each: a method turns the config and the built networks into the
list of stages a run trains, and says whether it needs a teacher. Nothing outside this
package knows a method's name; add a method by adding a module and its name to
``fitnets.names.METHODS``.

A method module has ``LABEL`` (its row in the demo's table), ``NEEDS_TEACHER`` and
``stages(setup) -> list[StagePlan]``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from torch import nn

from fitnets import names
from fitnets.config import Config
from fitnets.data.memory import Data
from fitnets.distill.teacher import Teacher
from fitnets.errors import FitnetsError
from fitnets.stage import StagePlan


@dataclass
class Setup:
    """What a method builds its stages from."""

    cfg: Config
    student: nn.Module
    teacher: Teacher | None  # None when the method needs none
    data: Data
    input_shape: tuple


# one module per name of fitnets.names.METHODS (the config's choices read the same tuple)
METHODS: dict[str, ModuleType] = {
    name: importlib.import_module(f"{__name__}.{name}") for name in names.METHODS}
COMPARED = ("backprop", "kd", "fitnet")  # the demo's comparison, in its table's order


def get(name: str) -> ModuleType:
    if name not in METHODS:
        raise FitnetsError(f"unknown method '{name}'; choose one of {', '.join(METHODS)}.")
    return METHODS[name]


def needs_teacher(command: str, cfg: Config) -> bool:
    """Whether the run loads a teacher (``fitnets train`` never does)."""
    return command != "train" and get(cfg.method).NEEDS_TEACHER


def plan(command: str, setup: Setup) -> list[StagePlan]:
    """The stages of the run: ``fitnets train`` is back-propagation on the labels (its
    stage is called "train"), ``fitnets distill`` the configured method's stages."""
    if command == "train":
        return METHODS["backprop"].stages(setup, name="train")
    return get(setup.cfg.method).stages(setup)
