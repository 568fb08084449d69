"""kd: knowledge distillation (Hinton et al.): the whole student on L_KD, with the
teacher's weight lambda annealed per epoch (the paper's stage 2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fitnets.data.text import IGNORE, TextData
from fitnets.distill.hint import guided_params
from fitnets.distill.losses import (
    describe_soft_targets,
    kd_loss,
    soft_target_stats,
    teacher_weight,
)
from fitnets.distill.methods import Offer, Range
from fitnets.distill.stages import ClassifierStage, per_position, student_groups
from fitnets.distill.teacher import LOGITS
from fitnets.stage import Parts, StagePlan

if TYPE_CHECKING:
    from fitnets.data.memory import Batch
    from fitnets.distill.methods import Setup

LABEL = "student: KD"
NEEDS_TEACHER = True
# the paper's tau 3 and lambda 4 inside
SEARCH = Offer(ranges=(Range("kd.tau", 1.0, 8.0), Range("kd.lambda_init", 0.5, 16.0)))


def stages(s: Setup) -> list[StagePlan]:
    return [plan(s)]


def plan(s: Setup, guided: list[str] = ()) -> StagePlan:
    """The KD stage; ``guided``: the student layers hint stages trained before it (the
    layers up to and in them get their lr scaled by kd.pretrained_lr_scale)."""
    return StagePlan("kd", s.cfg.train, lambda: KDStage(s, guided))


class KDStage(ClassifierStage):
    """L_KD = H(y, P_S) + lambda * H(P_T^tau, P_S^tau), lambda set per epoch."""

    def __init__(self, s: Setup, guided: list[str] = ()):
        k = self.k = s.cfg.kd
        pretrained = [p for g in guided for p in guided_params(s.student, g, s.data.probe())]
        groups = student_groups(s.student, s.cfg.train, pretrained, k.pretrained_lr_scale)
        s.teacher.prepare([LOGITS], epochs=s.cfg.train.epochs)
        self.teacher = s.teacher
        # a masked LM (data/text.py): both terms at the masked positions only
        self.masked = getattr(s.data, "masking", None) is not None
        # lambda lives on the device: a new value each epoch is a new number, not a new graph
        self.lam = torch.zeros((), device=next(s.student.parameters()).device)
        targets = None if self.masked else soft_targets(s, k.tau)
        super().__init__("kd", s.student, s.student, s.cfg.train, s.data, groups,
                         intro=[describe_soft_targets(**targets)] if targets else [],
                         summary={"soft_targets": targets} if targets else None)

    def start_epoch(self, epoch: int) -> dict:
        k = self.k
        lam = teacher_weight(epoch, init=k.lambda_init, start=k.lambda_start,
                             saturate=k.lambda_saturate, final=k.lambda_final)
        self.lam.fill_(lam)
        return {"lambda": lam}

    def loss(self, batch: Batch) -> tuple[torch.Tensor, Parts]:
        # a language model's (B, T, vocab) logits: KD on the next-token distribution at
        # every position, as B*T predictions (a masked LM: at its masked positions)
        t_logits, _ = per_position(self.teacher.logits(batch), batch.y)
        logits, y = per_position(self.net(batch.x), batch.y)
        total, hard, soft = kd_loss(logits, t_logits, y, lam=self.lam,
                                    tau=self.k.tau, tau_squared=self.k.tau_squared,
                                    student_tau=self.k.student_tau,
                                    keep=y != IGNORE if self.masked else None)
        return total, {"loss": total.detach(), "ce": hard.detach(), "soft": soft.detach()}


def soft_targets(s: Setup, tau: float) -> dict:
    """How sharp the teacher's soft targets are at ``tau`` (losses.soft_target_stats), on
    the first training rows (a language model's first blocks, every position a row): said
    when the stage starts and kept in its summary, so a flat target (a label-smoothed
    teacher at the paper's tau 3) is seen before training."""
    probe = s.data.probe(2 if isinstance(s.data, TextData) else 64)
    with torch.no_grad():
        logits = s.teacher.net(probe)
    stats = {k: round(v, 4) for k, v in soft_target_stats(logits, tau).items()}
    return {"stats": stats, "tau": tau}
