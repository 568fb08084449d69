"""Classifier stages: the whole student trained on a loss of its logits, judged by its
validation error (which drives early stopping). ``LabelStage`` is back-propagation on the
labels; KD and joint subclass ``ClassifierStage`` in their method modules. The hint stage is
in distill/hint.py. None of them trains, and none knows which method asked for it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fitnets.config import StageConfig
from fitnets.data.memory import Batch
from fitnets.data.text import TextData
from fitnets.data.training import TrainingData
from fitnets.optim import scaled_groups
from fitnets.stage import Evaluator, Parts, Stage

CLASSIFIER = "classifier"  # the kind of stage that trains the whole student


class ClassifierStage(Stage):
    """A stage training the whole ``student`` (inside ``module``, e.g. with regressors whose
    names start with ``prefix``); subclasses define ``loss``."""

    kind = CLASSIFIER

    def __init__(self, name: str, module: nn.Module, student: nn.Module, scfg: StageConfig,
                 data: TrainingData, groups: list[dict], prefix: str = "", **extra):
        self.name, self.student = name, student
        # a language model is judged by its validation loss (its log-perplexity), not by
        # next-token accuracy, which can fall while the perplexity still improves
        monitor = "val_loss" if isinstance(data, TextData) else "val_error"
        super().__init__(module, groups, scfg,
                         monitor=monitor if data.val is not None else None,
                         max_norm_prefix=prefix, **extra)

    def evaluate(self, evaluator: Evaluator) -> dict[str, float]:
        return evaluator.classifier_metrics(self.student)


class LabelStage(ClassifierStage):
    """Cross-entropy on the labels (back-propagation; ``fitnets train``), smoothed by the
    stage's label_smoothing."""

    def __init__(self, name: str, student: nn.Module, scfg: StageConfig, data: TrainingData):
        super().__init__(name, student, student, scfg, data, student_groups(student, scfg))
        self.smoothing = scfg.label_smoothing

    def loss(self, batch: Batch) -> tuple[torch.Tensor, Parts]:
        logits, y = per_position(self.net(batch.x).float(), batch.y)
        value = F.cross_entropy(logits, y, label_smoothing=self.smoothing)
        return value, {"loss": value.detach()}


def per_position(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A language model's next-token logits (B, T, V) and targets (B, T) as B*T predictions
    (every position counts once); a classifier's (B, C) and (B,) as they are."""
    if logits.dim() == 3:
        return logits.flatten(0, 1), y.flatten()
    return logits, y


def student_groups(model: nn.Module, scfg: StageConfig, pretrained: list[nn.Parameter] = (),
                   scale: float = 1.0) -> list[dict]:
    """lr_scale patterns, times ``scale`` for the layers pre-trained by hints."""
    ids = {id(p) for p in pretrained}
    groups = []
    for g in scaled_groups(model, None, scfg.optim.lr_scale):
        pre = [p for p in g["params"] if id(p) in ids]
        rest = [p for p in g["params"] if id(p) not in ids]
        if pre:
            groups.append({"params": pre, "scale": g["scale"] * scale})
        if rest:
            groups.append({"params": rest, "scale": g["scale"]})
    return groups
