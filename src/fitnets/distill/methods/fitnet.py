"""fitnet: the paper's method. One hint stage per (guided, hint) pair, each starting from the
previous one's student (stage 1), then KD on the whole student (stage 2), whose lr for the
layers the hints trained is scaled by kd.pretrained_lr_scale."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from fitnets.distill.hint import HintStage, hint_pairs
from fitnets.distill.methods import Offer, Range, kd
from fitnets.stage import StagePlan

if TYPE_CHECKING:
    from fitnets.distill.methods import Setup

LABEL = "student: hints + KD (FitNet)"
NEEDS_TEACHER = True
# the pair and regressor, the hint stage's lr (a tenth to ten times the recipe's), KD's keys
SEARCH = Offer(pairs=True, ranges=(Range("hints.stage.optim.lr", 0.1, 10.0, relative=True),
                                   *kd.SEARCH.ranges))


def stages(s: Setup) -> list[StagePlan]:
    pairs = hint_pairs(s.cfg, s.student, s.teacher.net)
    hints = [StagePlan(f"hints:{i}", s.cfg.hints.stage,
                       partial(HintStage, s.cfg, s.student, s.teacher, pair, i, s.data,
                               s.input_shape))
             for i, pair in enumerate(pairs)]
    return [*hints, kd.plan(s, guided=[g for g, _ in pairs])]
