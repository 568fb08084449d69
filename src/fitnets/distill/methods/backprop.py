"""backprop: the student trained on the labels alone (the paper's baseline); also what
``fitnets train`` does for a teacher (then the stage is called "train")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fitnets.distill.stages import classifier_stage, label_loss, student_groups
from fitnets.stage import StagePlan

if TYPE_CHECKING:
    from fitnets.distill.methods import Setup

LABEL = "student: backprop"
NEEDS_TEACHER = False


def stages(s: Setup, name: str = "backprop") -> list[StagePlan]:
    def build():
        groups = student_groups(s.student, s.cfg.train)
        return classifier_stage(name, s.student, s.student, label_loss, s.cfg.train, s.data,
                                groups)

    return [StagePlan(name, s.cfg.train, build)]
