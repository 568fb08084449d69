"""What a run trains, as data: a ``Stage`` (a module, its parameter groups, a loss, an
evaluation) and a ``StagePlan`` (a stage built when the run reaches it). Methods build them
(fitnets.distill.methods, fitnets.distill.stages); the Trainer (fitnets.trainer) runs them
and knows no method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from fitnets.config import StageConfig
from fitnets.data.memory import Arrays, Batch

# (the module to call, the batch, epoch) -> (loss, parts to log). The module is the stage's
# trainable module or its DDP wrapper. A loss asks the teacher first, then runs the module:
# the teacher's temporaries are freed before the student's activations for backward are
# built (measured: stage 1 ~25% slower on the CPU the other way round, benchmarks/speed.py).
LossFn = Callable[[nn.Module, Batch, int], tuple[torch.Tensor, dict[str, torch.Tensor]]]


class Evaluator(Protocol):
    """What a stage's evaluation may ask of the Trainer (which is one), named here so that
    this module does not import the trainer (which imports this module)."""

    def mean(self, fn: Callable[[Batch], torch.Tensor], arrays: Arrays) -> float: ...

    def classifier_metrics(self, model: nn.Module) -> dict[str, float]: ...


@dataclass
class Stage:
    """One stage of a run, as data: what to train, on which loss, judged how."""

    name: str  # written into the metrics as "stage": hints | kd | backprop | train | joint
    kind: str  # hints (a guided layer learns a hint) | classifier (the whole student)
    module: nn.Module  # the trainable module (student, or student + regressors)
    param_groups: list[dict]  # for the optimiser; each group may carry an lr "scale"
    loss: LossFn  # (module or its DDP wrapper, batch, epoch) -> (loss, parts to log)
    evaluate: Callable[[Evaluator], dict[str, float]]  # validation/test metrics
    monitor: str | None  # metric to minimise for early stopping (None: no validation)
    cfg: StageConfig
    constrain: Callable[[], None] = lambda: None  # max-norm after each step
    info: dict = field(default_factory=dict)  # extra per-epoch log fields (e.g. pair)
    extra_log: Callable[[int], dict] = lambda epoch: {}  # e.g. lambda of this epoch
    intro: list[str] = field(default_factory=list)  # printed when the stage starts
    summary: dict = field(default_factory=dict)  # kept in summary.json's stage entry
    check: Callable[[list[dict]], str | None] | None = None  # after each epoch: a warning?

    @property
    def label(self) -> str:
        return self.name + (f":{self.info['pair']}" if "pair" in self.info else "")


@dataclass
class StagePlan:
    """A stage not built yet: built when the run reaches it (building may compute a
    teacher cache), skipped with ``done()`` alone when a resumed run is already past it."""

    label: str  # hints:0, kd, ...
    cfg: StageConfig
    build: Callable[[], Stage]
    done: Callable[[], None] = lambda: None  # the stage is over (trained, or before a resume)
