"""fitnet: the paper's method. One hint stage per (guided, hint) pair, each starting from the
previous one's student (stage 1), then KD on the whole student (stage 2)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from fitnets.distill.methods import kd
from fitnets.distill.stages import hint_pairs, hint_stage, pretrained_tracker
from fitnets.stage import StagePlan

if TYPE_CHECKING:
    from fitnets.distill.methods import Setup

LABEL = "student: hints + KD (FitNet)"
NEEDS_TEACHER = True


def stages(s: Setup) -> list[StagePlan]:
    pairs = hint_pairs(s.cfg, s.student, s.teacher.net)
    pretrained, after = pretrained_tracker(s.student, s.data)
    hints = [StagePlan(f"hints:{i}", s.cfg.hints.stage,
                       partial(hint_stage, s.cfg, s.student, s.teacher, pair, i, s.data,
                               s.input_shape),
                       done=after(pair[0]))
             for i, pair in enumerate(pairs)]
    return [*hints, kd.plan(s, pretrained)]
