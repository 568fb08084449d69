"""The stages of FitNets as plain objects: hint training (stage 1), KD (stage 2) and the
back-propagation baseline. Each builder returns a ``train.Stage``; none of them trains.
"""

from __future__ import annotations

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
from fitnets.distill.taps import get_layer, layer_shapes, run_to
from fitnets.train import Arrays, Data, Stage, evaluate, max_norm_fn, scaled_groups


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
               index: int, data: Data, input_shape: tuple, wrap=as_is) -> tuple[Stage, dict]:
    """Stage 1 for one (guided, hint) pair; also returns a description of the regressor.

    ``wrap(module, trained_params)`` gives what the training loss calls (DDP: the wrapper);
    evaluation calls the module itself.
    """
    guided, hint = pair
    get_layer(student, guided)
    teacher_layer = get_layer(teacher, hint)
    g_shape = layer_shapes(student, input_shape)[guided]
    h_shape = layer_shapes(teacher, input_shape)[hint]
    nl = _nonlinearity(cfg, teacher_layer)
    regressor = build_regressor(g_shape, h_shape, cfg.hints.regressor, nl)
    regressor.to(next(student.parameters()).device)
    module = HintModule(student, regressor, guided)
    trained = params_reaching(module, module, data.train.x)
    net = wrap(module, trained)
    scfg = cfg.hints.stage
    reduction = cfg.hints.reduction

    def loss(x: torch.Tensor, y: torch.Tensor, epoch: int):
        with torch.no_grad():
            (target,) = run_to(teacher, x, [hint])  # the teacher stops at its hint layer
        value = hint_loss(net(x), target, reduction)
        return value, {"loss": value.detach()}

    def evaluate_hints(epoch: int) -> dict[str, float]:
        if data.val is None:
            return {}
        return {"val_hint_loss": mean_hint_loss(module, teacher, hint, data.val,
                                                data.eval_batch_size, reduction)}

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
                   batch_size: int, reduction: str) -> float:
    total, n = 0.0, len(arrays)
    for i in range(0, n, batch_size):
        x = arrays.x[i:i + batch_size]
        (target,) = run_to(teacher, x, [hint])
        total += hint_loss(module(x), target, reduction).item() * len(x)
    return total / max(n, 1)


def classifier_eval(model: nn.Module, data: Data):
    """Validation and test metrics of a classifier; ``val_error`` drives early stopping."""

    def run(epoch: int) -> dict[str, float]:
        out = {}
        if data.val is not None:
            v = evaluate(model, data.val, data.eval_batch_size)
            out.update(val_loss=v["loss"], val_acc=v["acc"], val_error=1.0 - v["acc"])
        out["test_acc"] = evaluate(model, data.test, data.eval_batch_size)["acc"]
        return out

    return run


def label_stage(name: str, model: nn.Module, scfg: StageConfig, data: Data,
                pretrained: list[nn.Parameter] = (), pretrained_scale: float = 1.0,
                wrap=as_is) -> Stage:
    """Back-propagation on the labels only (`fitnets train`, the backprop baseline)."""
    groups = _groups(model, scfg, pretrained, pretrained_scale)
    net = wrap(model, [p for g in groups for p in g["params"]])

    def loss(x: torch.Tensor, y: torch.Tensor, epoch: int):
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
             pretrained: list[nn.Parameter] = (), wrap=as_is) -> Stage:
    """Stage 2: the whole student on L_KD with lambda annealed per epoch."""
    k = cfg.kd
    groups = _groups(student, cfg.train, pretrained, k.pretrained_lr_scale)
    net = wrap(student, [p for g in groups for p in g["params"]])

    def lam(epoch: int) -> float:
        return teacher_weight(epoch, init=k.lambda_init, start=k.lambda_start,
                              saturate=k.lambda_saturate, final=k.lambda_final)

    def loss(x: torch.Tensor, y: torch.Tensor, epoch: int):
        with torch.no_grad():
            t_logits = teacher(x)
        total, hard, soft = kd_loss(net(x), t_logits, y, lam=lam(epoch), tau=k.tau,
                                    tau_squared=k.tau_squared)
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
