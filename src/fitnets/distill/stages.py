"""The stages of FitNets as plain objects: hint training (stage 1), KD (stage 2) and the
back-propagation baseline. Each builder returns a ``train.Stage``; none of them trains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
from torch import nn

from fitnets.config import Config, StageConfig
from fitnets.distill.losses import hint_loss, kd_loss, teacher_weight
from fitnets.distill.regressor import (
    Nonlinearity,
    build_regressor,
    count_params,
    hint_nonlinearity,
)
from fitnets.distill.regressor_init import init_regressor_
from fitnets.distill.taps import get_layer, layer_shapes, run_to, run_with
from fitnets.distributed import Dist
from fitnets.train import (
    Arrays,
    Data,
    Stage,
    eval_batches,
    evaluate,
    max_norm_fn,
    scaled_groups,
)

# (batch indices into data.train, flipped mask or None) -> the teacher's outputs
Targets = Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


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


def as_is(module: nn.Module, params) -> nn.Module:
    """The default ``wrap``: train ``module`` itself (one process)."""
    return module


def _nonlinearity(cfg: Config, teacher_layer: nn.Module) -> Nonlinearity:
    kind = cfg.hints.nonlinearity
    if kind == "auto":
        return hint_nonlinearity(teacher_layer)
    if kind == "maxout":
        found = hint_nonlinearity(teacher_layer)
        if found.kind != "maxout":
            from fitnets.errors import FitnetsError

            raise FitnetsError(
                "hints.nonlinearity=maxout needs a maxout hint layer (to copy its pieces), but "
                f"the hint layer ends in {found}. Use auto, relu or none."
            )
        return found
    return Nonlinearity(kind)


def hint_stage(cfg: Config, student: nn.Module, teacher: nn.Module, pair: tuple[str, str],
               index: int, data: Data, input_shape: tuple,
               targets: Targets | None = None, wrap=as_is) -> tuple[Stage, dict]:
    """Stage 1 for one (guided, hint) pair; also returns a description of the regressor.

    ``targets(idx, flipped)``, when given, returns the cached hint maps of the batch.
    ``wrap(module, trained_params)`` gives what the training loss calls (DDP: the wrapper);
    evaluation calls the module itself.
    """
    guided, hint = pair
    get_layer(student, guided)
    teacher_layer = get_layer(teacher, hint)
    g_shape = layer_shapes(student, input_shape)[guided]
    h_shape = layer_shapes(teacher, input_shape)[hint]
    nl = _nonlinearity(cfg, teacher_layer)
    regressor = init_regressor_(build_regressor(g_shape, h_shape, cfg.hints.regressor, nl),
                                cfg.hints.regressor_init)
    regressor.to(next(student.parameters()).device)
    module = HintModule(student, regressor, guided)
    trained = params_reaching(module, module, data.train.x)
    net = wrap(module, trained)
    scfg = cfg.hints.stage
    reduction = hint_reduction(cfg, joint=False)

    def loss(x: torch.Tensor, y: torch.Tensor, epoch: int, idx, flipped):
        if targets is not None:
            target = targets(idx, flipped)
        else:
            with torch.inference_mode():  # the teacher stops at its hint layer
                (target,) = run_to(teacher, x, [hint])
        value = hint_loss(net(x), target, reduction)
        return value, {"loss": value.detach()}

    def evaluate_hints(epoch: int) -> dict[str, float]:
        if data.val is None:
            return {}
        return {"val_hint_loss": mean_hint_loss(module, teacher, hint, data.val,
                                                data.eval_batch_size, reduction, data.dist)}

    stage = Stage(
        name="hints", module=module,
        param_groups=scaled_groups(module, trained, scfg.optim.lr_scale, prefix="student."),
        loss=loss, evaluate=evaluate_hints,
        monitor="val_hint_loss" if data.val is not None else None, cfg=scfg,
        constrain=max_norm_fn(module, scfg.optim.max_norm, prefix="student."),
        info={"pair": index},
    )
    desc = {"pair": index, "guided": guided, "hint": hint, "guided_shape": list(g_shape),
            "hint_shape": list(h_shape), "regressor": getattr(regressor, "kind", "none"),
            "nonlinearity": str(nl), "regressor_params": count_params(regressor),
            "trained_params": sum(p.numel() for p in trained
                                  if not any(p is q for q in regressor.parameters()))}
    return stage, desc


@torch.no_grad()
def mean_hint_loss(module: nn.Module, teacher: nn.Module, hint: str, arrays: Arrays,
                   batch_size: int, reduction: str, dist: Dist | None = None) -> float:
    """The hint loss per example over ``arrays`` (sharded over the ranks under torchrun)."""
    dist = dist or Dist()
    total = 0.0
    for x, _ in eval_batches(arrays, batch_size, dist):
        with torch.inference_mode():
            (target,) = run_to(teacher, x, [hint])
        total += hint_loss(module(x), target, reduction).item() * len(x)
    return dist.sum({"total": total})["total"] / max(len(arrays), 1)


def classifier_eval(model: nn.Module, data: Data):
    """Validation and test metrics of a classifier; ``val_error`` drives early stopping."""

    def run(epoch: int) -> dict[str, float]:
        out = {}
        if data.val is not None:
            v = evaluate(model, data.val, data.eval_batch_size, data.dist)
            out.update(val_loss=v["loss"], val_acc=v["acc"], val_error=1.0 - v["acc"])
        out["test_acc"] = evaluate(model, data.test, data.eval_batch_size, data.dist)["acc"]
        return out

    return run


def label_stage(name: str, model: nn.Module, scfg: StageConfig, data: Data,
                pretrained: list[nn.Parameter] = (), pretrained_scale: float = 1.0,
                wrap=as_is) -> Stage:
    """Back-propagation on the labels only (`fitnets train`, the backprop baseline)."""
    groups = _groups(model, scfg, pretrained, pretrained_scale)
    net = wrap(model, [p for g in groups for p in g["params"]])

    def loss(x: torch.Tensor, y: torch.Tensor, epoch: int, idx, flipped):
        value = torch.nn.functional.cross_entropy(net(x).float(), y)
        return value, {"loss": value.detach()}

    return Stage(
        name=name, module=model,
        param_groups=groups,
        loss=loss, evaluate=classifier_eval(model, data),
        monitor="val_error" if data.val is not None else None, cfg=scfg,
        constrain=max_norm_fn(model, scfg.optim.max_norm),
    )


def kd_stage(cfg: Config, student: nn.Module, teacher: nn.Module, data: Data,
             pretrained: list[nn.Parameter] = (), targets: Targets | None = None,
             wrap=as_is) -> Stage:
    """Stage 2: the whole student on L_KD with lambda annealed per epoch.

    ``targets(idx, flipped)``, when given, returns the cached teacher logits of the batch.
    """
    k = cfg.kd
    groups = _groups(student, cfg.train, pretrained, k.pretrained_lr_scale)
    net = wrap(student, [p for g in groups for p in g["params"]])

    def lam(epoch: int) -> float:
        return teacher_weight(epoch, init=k.lambda_init, start=k.lambda_start,
                              saturate=k.lambda_saturate, final=k.lambda_final)

    def loss(x: torch.Tensor, y: torch.Tensor, epoch: int, idx, flipped):
        if targets is not None:
            t_logits = targets(idx, flipped)
        else:
            with torch.inference_mode():  # soft targets are built outside it (losses.py)
                t_logits = teacher(x)
        total, hard, soft = kd_loss(net(x), t_logits, y, lam=lam(epoch), tau=k.tau,
                                    tau_squared=k.tau_squared, student_tau=k.student_tau)
        return total, {"loss": total.detach(), "ce": hard.detach(), "soft": soft.detach()}

    return Stage(
        name="kd", module=student,
        param_groups=groups,
        loss=loss, evaluate=classifier_eval(student, data),
        monitor="val_error" if data.val is not None else None, cfg=cfg.train,
        constrain=max_norm_fn(student, cfg.train.optim.max_norm),
        extra_log=lambda epoch: {"lambda": lam(epoch)},
    )


def _groups(model: nn.Module, scfg: StageConfig, pretrained, scale: float) -> list[dict]:
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


# --------------------------------------------------------------------------- joint mode
# method=joint (a deviation from the paper, as later codebases such as CRD train FitNets):
# one stage, loss = CE(student(x), y) + beta * sum over pairs of hint_loss(r(v_g), u_h), with
# the regressors trained together with the whole student. The regressors live in
# JointModule (so the optimiser and checkpoints see them) and are dropped when it ends.


def hint_reduction(cfg: Config, joint: bool) -> str:
    """hints.reduction with auto resolved: the paper's sum for stage 1, the mean for joint."""
    r = cfg.hints.reduction
    return ("mean" if joint else "paper") if r == "auto" else r


class JointModule(nn.Module):
    """The whole student plus one regressor per (guided, hint) pair; forward = logits."""

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


def joint_loss(net, teacher: nn.Module, hints: list[str], x: torch.Tensor,
               y: torch.Tensor, beta: float, reduction: str):
    """(ce + beta * hint, ce, hint): hint is summed over the pairs; ``net`` is a JointModule
    (or its DDP wrapper)."""
    with torch.no_grad():
        targets = run_to(teacher, x, hints)  # the teacher stops at its deepest hint layer
    logits, preds = net(x)
    ce = torch.nn.functional.cross_entropy(logits.float(), y)
    hint = sum(hint_loss(p, t, reduction) for p, t in zip(preds, targets))
    return ce + beta * hint, ce, hint


def joint_stage(cfg: Config, student: nn.Module, teacher: nn.Module,
                pairs: list[tuple[str, str]], data: Data,
                input_shape: tuple, wrap=as_is) -> tuple[Stage, dict]:
    """The single stage of method=joint; also returns a description of the regressors."""
    s_shapes = layer_shapes(student, input_shape)
    t_shapes = layer_shapes(teacher, input_shape)
    regressors, descs = [], []
    for i, (guided, hint) in enumerate(pairs):
        get_layer(student, guided)
        nl = _nonlinearity(cfg, get_layer(teacher, hint))
        reg = build_regressor(s_shapes[guided], t_shapes[hint], cfg.hints.regressor, nl)
        regressors.append(reg.to(next(student.parameters()).device))
        descs.append({"pair": i, "guided": guided, "hint": hint,
                      "guided_shape": list(s_shapes[guided]), "hint_shape": list(t_shapes[hint]),
                      "regressor": getattr(reg, "kind", "none"), "nonlinearity": str(nl),
                      "regressor_params": count_params(reg)})
    module = JointModule(student, regressors, [g for g, _ in pairs])
    hints = [h for _, h in pairs]
    beta, reduction = cfg.hints.beta, hint_reduction(cfg, joint=True)
    scfg = cfg.train
    groups = scaled_groups(module, None, scfg.optim.lr_scale, prefix="student.")
    net = wrap(module, [p for g in groups for p in g["params"]])

    def loss(x: torch.Tensor, y: torch.Tensor, epoch: int, idx, flipped):
        total, ce, hint = joint_loss(net, teacher, hints, x, y, beta, reduction)
        return total, {"loss": total.detach(), "ce": ce.detach(), "hint": hint.detach()}

    stage = Stage(
        name="joint", module=module,
        param_groups=groups,
        loss=loss, evaluate=classifier_eval(student, data),
        monitor="val_error" if data.val is not None else None, cfg=scfg,
        constrain=max_norm_fn(module, scfg.optim.max_norm, prefix="student."),
        extra_log=lambda epoch: {"beta": beta},
    )
    return stage, {"joint": True, "beta": beta, "reduction": reduction, "pairs": descs}
