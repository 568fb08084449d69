"""backprop: the student trained on the labels alone (the paper's baseline); also what
``fitnets train`` does for a teacher (then the stage is called "train")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fitnets.distill.methods import Offer
from fitnets.distill.stages import LabelStage
from fitnets.stage import StagePlan

if TYPE_CHECKING:
    from fitnets.distill.methods import Setup

LABEL = "student: backprop"
NEEDS_TEACHER = False
SEARCH = Offer()  # no teacher, pairs, tau or lambda: only keys named with --space


def stages(s: Setup, name: str = "backprop") -> list[StagePlan]:
    return [StagePlan(name, s.cfg.train,
                      lambda: LabelStage(name, s.student, s.cfg.train, s.data))]
