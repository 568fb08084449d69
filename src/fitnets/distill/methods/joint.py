"""joint: one stage, loss = CE(student(x), y) + beta * sum over pairs of the hint loss, the
regressors trained together with the whole student.

A deviation from the paper, as later codebases (e.g. the CRD code) train "FitNets". The
regressors live in JointModule, so the optimiser, DDP and checkpoints see them; they are
dropped when the stage ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from fitnets.distill.hint import (
    describe_pair,
    hint_loss,
    hint_pairs,
    hint_reduction,
    hint_target,
    regressor_for,
)
from fitnets.distill.methods import Offer, Range
from fitnets.distill.stages import ClassifierStage, per_position
from fitnets.distill.taps import prepare_taps, run_with
from fitnets.optim import scaled_groups
from fitnets.stage import Parts, StagePlan

if TYPE_CHECKING:
    from fitnets.data.memory import Batch
    from fitnets.distill.methods import Setup

LABEL = "student: joint CE + hints"
NEEDS_TEACHER = True
# the pair and regressor, and beta from a tenth to ten times the recipe's
SEARCH = Offer(pairs=True, ranges=(Range("hints.beta", 0.1, 10.0, relative=True),))


class JointModule(nn.Module):
    """The whole student plus one regressor per (guided, hint) pair."""

    def __init__(self, student: nn.Module, regressors: list[nn.Module], guided: list[str]):
        super().__init__()
        self.student = student
        self.regressors = nn.ModuleList(regressors)
        self.guided = list(guided)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Student logits and the regressors' predictions of the hints, in one forward.

        (A plain forward, so that a DDP wrapper sees the whole step; evaluation calls the
        student itself.)
        """
        logits, taps = run_with(self.student, x, self.guided)
        return logits, [r(v) for r, v in zip(self.regressors, taps)]


def stages(s: Setup) -> list[StagePlan]:
    return [StagePlan("joint", s.cfg.train,
                      lambda: JointStage(s, hint_pairs(s.cfg, s.student, s.teacher.net)))]


class JointStage(ClassifierStage):
    """CE + beta * the hint losses of all pairs, one stage."""

    def __init__(self, s: Setup, pairs: list[tuple[str, str]]):
        built = [regressor_for(s.cfg, s.student, s.teacher.net, pair, i, s.input_shape)
                 for i, pair in enumerate(pairs)]
        module = JointModule(s.student, [r for r, _ in built], [g for g, _ in pairs])
        self.hints = [h for _, h in pairs]
        self.views = [hint_target(r) for r, _ in built]
        s.teacher.prepare(self.hints, epochs=s.cfg.train.epochs)
        prepare_taps(s.student, [g for g, _ in pairs])
        prepare_taps(s.teacher.net, self.hints)
        self.teacher = s.teacher
        self.beta, self.reduction = s.cfg.hints.beta, hint_reduction(s.cfg, joint=True)
        descs = [d for _, d in built]
        groups = scaled_groups(module, None, s.cfg.train.optim.lr_scale, prefix="student.")
        super().__init__(
            "joint", module, s.student, s.cfg.train, s.data, groups, prefix="student.",
            intro=[describe_pair("joint", d) for d in descs],
            summary={"joint": True, "beta": self.beta, "reduction": self.reduction,
                     "pairs": descs})

    def start_epoch(self, epoch: int) -> dict:
        return {"beta": self.beta}

    def loss(self, batch: Batch) -> tuple[torch.Tensor, Parts]:
        targets = self.teacher.features(self.hints, batch)
        logits, preds = self.net(batch.x)
        ce = F.cross_entropy(*per_position(logits.float(), batch.y))  # LMs: every position
        hint = sum(hint_loss(p, view(t), self.reduction)
                   for p, t, view in zip(preds, targets, self.views))
        total = ce + self.beta * hint
        return total, {"loss": total.detach(), "ce": ce.detach(), "hint": hint.detach()}
