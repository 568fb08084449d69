"""What a run trains: a ``Stage`` (a small class: its modules, parameter groups, one
``loss(batch)``, an evaluation) and a ``StagePlan`` (a stage built when the run reaches it).

Methods build stages (fitnets.distill.methods; the hint stage is fitnets.distill.hint, the
classifier stages fitnets.distill.stages); the Trainer (fitnets.trainer) runs them and knows
no method. ``loss(batch)`` is the whole step's forward: it reads no config, logs nothing and
turns nothing into a Python number, so the Trainer can compile it or capture it as a CUDA
graph (``perf.compile``, ``perf.cuda_graphs``); the optimiser step, max-norm, sums and
logging are the Trainer's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from fitnets.config import StageConfig
from fitnets.data.memory import Arrays, Batch
from fitnets.optim import max_norm_fn

Parts = dict[str, torch.Tensor]  # a step's loss parts to log (detached, on the device)


class Evaluator(Protocol):
    """What a stage's evaluation may ask of the Trainer (which is one), named here so that
    this module does not import the trainer (which imports this module)."""

    def mean(self, fn: Callable[[Batch], torch.Tensor], arrays: Arrays) -> float: ...

    def classifier_metrics(self, model: nn.Module) -> dict[str, float]: ...


class Stage:
    """One stage of a run. A subclass sets ``name``/``kind`` and defines ``loss`` and
    ``evaluate``; everything else is data the Trainer reads.

    ``module`` is what is trained (the student, or the student with regressors): the
    optimiser, DDP and the checkpoints see it. ``net`` is what ``loss`` calls for the
    forward pass: ``module`` itself, or the DDP wrapper the Trainer puts around it (set by
    the Trainer before training). A loss asks the teacher first, then runs ``net``: the
    teacher's temporaries are freed before the student's activations for backward are built
    (measured: stage 1 ~25% slower on the CPU the other way round, benchmarks/speed.py).
    """

    name = "stage"  # written into the metrics as "stage": hints | kd | backprop | train | joint
    kind = "classifier"  # hints (a guided layer learns a hint) | classifier (the whole student)

    def __init__(self, module: nn.Module, param_groups: list[dict], cfg: StageConfig, *,
                 monitor: str | None, max_norm_prefix: str = "", info: dict | None = None,
                 intro: list[str] | None = None, summary: dict | None = None):
        self.module = module
        self.net: nn.Module = module
        # set by the Trainer under perf.compile in one process: ``loss`` compiled whole
        # (teacher, forward and loss in one graph), and whether it is replayed as CUDA
        # graphs, which replay one shape (an epoch's last, smaller batch then runs ``loss``)
        self.compiled_loss: Callable[[Batch], tuple[torch.Tensor, Parts]] | None = None
        self.graphs = False
        self.param_groups = param_groups  # for the optimiser; a group may carry an lr "scale"
        self.cfg = cfg
        self.monitor = monitor  # metric to minimise for early stopping (None: no validation)
        # max-norm after each step (the Trainer may replace it by its compiled form)
        self.constrain: Callable[[], None] = max_norm_fn(module, cfg.optim.max_norm,
                                                         prefix=max_norm_prefix)
        self.info = info or {}  # extra per-epoch log fields (e.g. the hint pair)
        self.intro = intro or []  # printed when the stage starts
        self.summary = summary or {}  # kept in summary.json's stage entry

    def loss(self, batch: Batch) -> tuple[torch.Tensor, Parts]:
        """The loss of one training batch and its parts to log."""
        raise NotImplementedError

    def start_epoch(self, epoch: int) -> dict:
        """Called before each training epoch (1-based); returns the epoch's own log fields
        (e.g. KD's lambda). A stage whose loss changes with the epoch changes it here, in a
        device tensor, so that a compiled loss sees the same graph every epoch."""
        return {}

    def evaluate(self, evaluator: Evaluator) -> dict[str, float]:
        """Validation/test metrics (the module is in eval mode, under autocast)."""
        raise NotImplementedError

    def check(self, records: list[dict]) -> str | None:
        """After each epoch, with the stage's records so far: a warning to print, or None."""
        return None

    @property
    def label(self) -> str:
        return self.name + (f":{self.info['pair']}" if "pair" in self.info else "")


@dataclass
class StagePlan:
    """A stage not built yet: built when the run reaches it (building may compute a
    teacher cache); a resumed run past it never builds it."""

    label: str  # hints:0, kd, ...
    cfg: StageConfig
    build: Callable[[], Stage]
