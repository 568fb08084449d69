"""The hint stage (the paper's stage 1): the student up to its guided layer, through a
regressor, learns to predict the teacher's hint layer; only W_Guided and W_r are trained.

One hint step, read in four files: ``HintStage.loss`` and ``hint_loss`` here, the teacher's
hint in distill/teacher.py (from the teacher cache, or by running the teacher to the hint
layer), the student's truncated forward in distill/taps.py, and the step around it in
fitnets/trainer.py. The pair, regressor and reduction helpers below are shared with the
joint method.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fitnets.config import Config
from fitnets.data.memory import Batch
from fitnets.data.training import TrainingData
from fitnets.distill import watch
from fitnets.distill.regressor import (
    PROJECTION_KINDS,
    Nonlinearity,
    build_regressor,
    describe_regressor,
    hint_nonlinearity,
)
from fitnets.distill.regressor_init import init_regressor_
from fitnets.distill.taps import get_layer, layer_shapes, prepare_taps, run_to
from fitnets.distill.teacher import Teacher
from fitnets.distill.tokens import prefix_tokens
from fitnets.errors import FitnetsError
from fitnets.optim import scaled_groups
from fitnets.stage import Evaluator, Parts, Stage

HINTS = "hints"  # the kind (and name) of a hint stage, written into the metrics


def hint_loss(prediction: torch.Tensor, hint: torch.Tensor,
              reduction: str = "paper") -> torch.Tensor:
    """L_HT = 1/2 ||u_h - r(v_g)||^2.

    paper: squares summed over every feature of an example, halved, then averaged over the
    batch (the authors' reduction). mean: the per-element mean (what MSELoss gives).
    """
    diff = prediction.float() - hint.float()
    if reduction == "paper":
        return 0.5 * diff.pow(2).flatten(1).sum(dim=1).mean()
    if reduction == "mean":
        return diff.pow(2).mean()
    if reduction == "authors":
        # The authors' HintCost (adri-romsor/FitNets costs/HintCost.py lines 77-80):
        # 0.5 * (hint - out)**2, T.sum(axis=1), T.mean(): on pylearn2's ('c', 0, 1, 'b')
        # maps axis 1 is the rows, so rows are summed and channels, columns and the batch
        # averaged. NCHW: sum over dim 2. On (N, F) outputs (fc regressor) it is the paper's.
        sq = 0.5 * diff.pow(2)
        return sq.sum(dim=2 if sq.dim() == 4 else 1).mean()
    raise ValueError(f"hint loss reduction must be 'paper', 'mean' or 'authors', "
                     f"got {reduction!r}")


class HintModule(nn.Module):
    """Stage 1's trainable module: the student up to its guided layer, then the regressor.

    The regressor lives here, beside the student, so that the optimiser, DDP and the
    checkpoints all see it; it is dropped with this module when stage 1 ends.
    """

    def __init__(self, student: nn.Module, regressor: nn.Module, guided: str):
        super().__init__()
        self.student = student
        self.regressor = regressor
        self.guided = guided

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (v,) = run_to(self.student, x, [self.guided])
        return self.regressor(v)


def params_reaching(module: nn.Module, fn, x: torch.Tensor) -> list[nn.Parameter]:
    """The parameters of ``module`` that ``fn(x)`` depends on (found by one backward pass).

    Stage 1 must train only W_Guided and W_r; asking autograd which parameters the guided
    output depends on works for any architecture. Run in eval mode so that batch-norm
    statistics are not touched by the probe.
    """
    was_training = module.training
    module.eval()
    saved = [(p, p.grad) for p in module.parameters()]
    for p, _ in saved:
        p.grad = None
    try:
        out = fn(x[:2])
        out.float().sum().backward()
        used = [p for p in module.parameters() if p.grad is not None]
    finally:
        for p, g in saved:
            p.grad = g
        module.train(was_training)
    return used


def guided_params(student: nn.Module, guided: str, x: torch.Tensor) -> list[nn.Parameter]:
    """The student's parameters below (and in) its guided layer: what a hint stage trained."""
    return params_reaching(student, lambda v: run_to(student, v, [guided])[0], x)


def hint_pairs(cfg: Config, student: nn.Module, teacher: nn.Module) -> list[tuple[str, str]]:
    """hints.pairs, or the models' own default (guided, hint) pair."""
    if cfg.hints.pairs:
        return [tuple(p) for p in cfg.hints.pairs]
    guided = getattr(student, "default_guided", None)
    hint = getattr(teacher, "default_hint", None)
    if not guided or not hint:
        raise FitnetsError(
            "no hint pair given and the models have no defaults: set "
            "hints.pairs=[[GUIDED_STUDENT_LAYER, HINT_TEACHER_LAYER]] (see `fitnets layers`)."
        )
    return [(guided, hint)]


PAPER_REGRESSORS = ("conv", "fc", "none")  # the paper's; the others are projections/tokens


def hint_reduction(cfg: Config, joint: bool, kind: str = "conv") -> str:
    """hints.reduction with auto resolved: the paper's sum for a hint stage with the paper's
    regressors (``kind`` conv, fc, none), the mean for projection regressors (conv1x1,
    strided, transposed, interp: modern nets trained with SGD, whose summed loss diverged,
    see distill/watch.py) and when the hint loss is added to the classifier's (joint)."""
    r = cfg.hints.reduction
    if r != "auto":
        return r
    return "mean" if joint or kind not in PAPER_REGRESSORS else "paper"


def regressor_for(cfg: Config, student: nn.Module, teacher: nn.Module, pair: tuple[str, str],
                  index: int, input_shape: tuple) -> tuple[nn.Module, dict]:
    """The regressor of one (guided, hint) pair, on the student's device, and its
    description (shapes, kind, nonlinearity, parameters)."""
    guided, hint = pair
    get_layer(student, guided)
    g_shape = layer_shapes(student, input_shape)[guided]
    h_shape = layer_shapes(teacher, input_shape)[hint]
    if cfg.hints.regressor in PROJECTION_KINDS and cfg.hints.nonlinearity == "auto":
        nl = Nonlinearity("relu")  # a projection's: batch norm, then ReLU (as in CRD)
    else:
        nl = _nonlinearity(cfg, get_layer(teacher, hint))
    built = build_regressor(g_shape, h_shape, cfg.hints.regressor, nl, cfg.hints.cls_token,
                            (prefix_tokens(student), prefix_tokens(teacher)))
    regressor = init_regressor_(built, cfg.hints.regressor_init)
    cost = describe_regressor(regressor, g_shape)
    desc = {"pair": index, "guided": guided, "hint": hint, "guided_shape": list(g_shape),
            "hint_shape": list(h_shape), "regressor": cost["kind"], "nonlinearity": str(nl),
            "regressor_params": cost["params"], "regressor_mults": cost["mults"]}
    if hasattr(regressor, "mapping"):
        desc["mapping"] = regressor.mapping()
    regressor.to(next(student.parameters()).device)
    return regressor, desc


def hint_target(regressor: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """What of the teacher's hint the regressor's output is compared with (a token regressor
    that drops the CLS token drops it from the hint too); the whole hint otherwise."""
    return getattr(regressor, "hint_target", None) or (lambda hint: hint)


def describe_pair(stage_name: str, d: dict) -> str:
    mapping = f" ({d['mapping']})" if d.get("mapping") else ""
    return (f"[{stage_name}/{d['pair']}] guided {d['guided']} {d['guided_shape']} -> hint "
            f"{d['hint']} {d['hint_shape']}: {d['regressor']} regressor{mapping}, "
            f"{d['nonlinearity']}, {d['regressor_params']:,} parameters, "
            f"{d.get('regressor_mults', 0):,} multiplications per image")


def _nonlinearity(cfg: Config, teacher_layer: nn.Module) -> Nonlinearity:
    kind = cfg.hints.nonlinearity
    if kind == "auto":
        return hint_nonlinearity(teacher_layer)
    if kind == "maxout":
        found = hint_nonlinearity(teacher_layer)
        if found.kind != "maxout":
            raise FitnetsError(
                "hints.nonlinearity=maxout needs a maxout hint layer (to copy its pieces), but "
                f"the hint layer ends in {found}. Use auto, relu or none."
            )
        return found
    return Nonlinearity(kind)


class HintStage(Stage):
    """Stage 1 for one (guided, hint) pair, ``index`` among the run's pairs."""

    name = kind = HINTS

    def __init__(self, cfg: Config, student: nn.Module, teacher: Teacher,
                 pair: tuple[str, str], index: int, data: TrainingData, input_shape: tuple):
        guided, self.hint = pair
        self.regressor, desc = regressor_for(cfg, student, teacher.net, pair, index,
                                             input_shape)
        module = HintModule(student, self.regressor, guided)
        trained = params_reaching(module, module, data.probe())
        teacher.prepare([self.hint], epochs=cfg.hints.stage.epochs)
        prepare_taps(student, [guided])
        prepare_taps(teacher.net, [self.hint])
        self.teacher, self.data, self.index = teacher, data, index
        self.reduction = hint_reduction(cfg, joint=False, kind=desc["regressor"])
        self.target = hint_target(self.regressor)
        self.lr = cfg.hints.stage.optim.lr
        desc["trained_params"] = sum(p.numel() for p in trained
                                     if not any(p is q for q in self.regressor.parameters()))
        desc["reduction"] = self.reduction
        self.probe = data.probe(32)
        scfg = cfg.hints.stage
        super().__init__(module, scaled_groups(module, trained, scfg.optim.lr_scale,
                                               prefix="student."), scfg,
                         monitor="val_hint_loss" if data.val is not None else None,
                         max_norm_prefix="student.", info={"pair": index},
                         intro=[describe_pair(HINTS, desc)], summary=desc)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, Parts]:
        hint = self.target(self.teacher.features([self.hint], batch)[0])
        value = hint_loss(self.net(batch.x), hint, self.reduction)
        return value, {"loss": value.detach()}

    def evaluate(self, evaluator: Evaluator) -> dict[str, float]:
        if self.data.val is None:
            return {}
        return {"val_hint_loss": evaluator.mean(
            lambda b: hint_loss(self.module(b.x),
                                self.target(self.teacher.features([self.hint], b)[0]),
                                self.reduction),
            self.data.val)}

    def check(self, records: list[dict]) -> str | None:
        """A dead regressor or a frozen hint loss, said with what to try."""
        with torch.no_grad():
            pred = self.module.eval()(self.probe)
        name = f"[hints/{self.index}]"
        tip = watch.advice("hints.stage", self.lr, self.reduction, int(pred[0].numel()))
        if watch.constant_output(pred):
            zeros = (pred == 0).float().mean().item()
            why = (f"{zeros:.0%} zeros: its ReLU has died" if zeros > 0.99 else
                   "the guided layer gives (nearly) the same map for every image: with a tiny "
                   "initialisation a deep student's signal has vanished before it")
            return (f"{name} the regressor's output is the same for every image ({why}), so "
                    "the hint loss cannot fall. " + tip)
        losses = [r["train_loss"] for r in records if "train_loss" in r]
        if watch.loss_stalled(losses):
            return (f"{name} the hint loss has stopped moving ({losses[-watch.WINDOW]:.4g} -> "
                    f"{losses[-1]:.4g} over {watch.WINDOW} epochs). " + tip)
        return None


