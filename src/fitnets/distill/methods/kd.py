"""kd: knowledge distillation (Hinton et al.): the whole student on L_KD, with the
teacher's weight lambda annealed per epoch (the paper's stage 2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fitnets.distill.losses import kd_loss, teacher_weight
from fitnets.distill.stages import classifier_stage, student_groups
from fitnets.distill.teacher import LOGITS
from fitnets.stage import Stage, StagePlan

if TYPE_CHECKING:
    from fitnets.distill.methods import Setup

LABEL = "student: KD"
NEEDS_TEACHER = True


def stages(s: Setup) -> list[StagePlan]:
    return [plan(s)]


def plan(s: Setup, pretrained: list[torch.nn.Parameter] = ()) -> StagePlan:
    """The KD stage; ``pretrained``: the layers hint stages trained before it (their lr is
    scaled by kd.pretrained_lr_scale), filled in by the time the stage is built."""
    return StagePlan("kd", s.cfg.train, lambda: kd_stage(s, pretrained))


def kd_stage(s: Setup, pretrained=()) -> Stage:
    k = s.cfg.kd
    groups = student_groups(s.student, s.cfg.train, pretrained, k.pretrained_lr_scale)
    s.teacher.prepare([LOGITS])

    def lam(epoch: int) -> float:
        return teacher_weight(epoch, init=k.lambda_init, start=k.lambda_start,
                              saturate=k.lambda_saturate, final=k.lambda_final)

    def loss(net: torch.nn.Module, batch, epoch: int):
        t_logits = s.teacher.logits(batch)
        total, hard, soft = kd_loss(net(batch.x), t_logits, batch.y, lam=lam(epoch),
                                    tau=k.tau, tau_squared=k.tau_squared,
                                    student_tau=k.student_tau)
        return total, {"loss": total.detach(), "ce": hard.detach(), "soft": soft.detach()}

    return classifier_stage("kd", s.student, s.student, loss, s.cfg.train, s.data, groups,
                            extra_log=lambda epoch: {"lambda": lam(epoch)})
