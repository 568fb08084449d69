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

from fitnets.distill.losses import hint_loss
from fitnets.distill.stages import (
    classifier_stage,
    describe_pair,
    hint_pairs,
    hint_reduction,
    hint_target,
    regressor_for,
)
from fitnets.distill.taps import run_with
from fitnets.optim import scaled_groups
from fitnets.stage import Stage, StagePlan

if TYPE_CHECKING:
    from fitnets.distill.methods import Setup

LABEL = "student: joint CE + hints"
NEEDS_TEACHER = True


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
                      lambda: joint_stage(s, hint_pairs(s.cfg, s.student, s.teacher.net)))]


def joint_stage(s: Setup, pairs: list[tuple[str, str]]) -> Stage:
    built = [regressor_for(s.cfg, s.student, s.teacher.net, pair, i, s.input_shape)
             for i, pair in enumerate(pairs)]
    module = JointModule(s.student, [r for r, _ in built], [g for g, _ in pairs])
    hints = [h for _, h in pairs]
    views = [hint_target(r) for r, _ in built]
    s.teacher.prepare(hints)
    beta, reduction = s.cfg.hints.beta, hint_reduction(s.cfg, joint=True)

    def loss(net: nn.Module, batch, epoch: int):
        targets = s.teacher.features(hints, batch)
        logits, preds = net(batch.x)
        ce = F.cross_entropy(logits.float(), batch.y)
        hint = sum(hint_loss(p, view(t), reduction) for p, t, view in zip(preds, targets, views))
        total = ce + beta * hint
        return total, {"loss": total.detach(), "ce": ce.detach(), "hint": hint.detach()}

    descs = [d for _, d in built]
    groups = scaled_groups(module, None, s.cfg.train.optim.lr_scale, prefix="student.")
    return classifier_stage(
        "joint", module, s.student, loss, s.cfg.train, s.data, groups, prefix="student.",
        extra_log=lambda epoch: {"beta": beta},
        intro=[describe_pair("joint", d) for d in descs],
        summary={"joint": True, "beta": beta, "reduction": reduction, "pairs": descs})
