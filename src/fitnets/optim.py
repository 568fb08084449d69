"""RMSProp exactly as pylearn2 ran it for the authors (``optim.name=rmsprop_pylearn2``).

pylearn2's rule (``pylearn2/training_algorithms/learning_rule.py``, class ``RMSProp``,
lisa-lab/pylearn2 at af81e5c, lines 417-421 and 497-504)::

    ms  <- decay * ms + (1 - decay) * g^2          # ms starts at 0
    p   <- p - lr * g / max(sqrt(ms), 1 / max_scaling)

with ``max_scaling = 1e5`` (the default, and the value the authors' yaml files set), i.e. a
*floor* of 1e-5 on the RMS. ``torch.optim.RMSprop`` divides by ``sqrt(ms) + eps`` instead.
The two agree when sqrt(ms) >> 1e-5; they differ for parameters whose gradients are tiny
(e.g. early on from the authors' U(+-0.005) initialisation): torch's step is then about
lr * g / (|g| * sqrt(1 - decay)) ~ 3.2 * lr whatever the size of g, pylearn2's is
lr * g / 1e-5, which is smaller once |g| * sqrt(1 - decay) < 1e-5.
There is no momentum in pylearn2's RMSProp; per-layer learning-rate scales (``W_lr_scale``)
multiply ``lr``, as our parameter groups' ``lr`` do.
"""

from __future__ import annotations

import fnmatch
import typing
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim import Optimizer

from fitnets.config import OptimConfig
from fitnets.errors import FitnetsError


class RMSpropPylearn2(Optimizer):
    """pylearn2's RMSProp: ``p -= lr * g / max(sqrt(ms), floor)`` (module docstring).

    ``weight_decay`` adds ``weight_decay * p`` to the gradient first (an L2 term in the
    cost, as pylearn2 would write it). ``foreach``: update all parameters of a group with
    multi-tensor kernels (None: on GPUs, as torch's optimisers choose; the same arithmetic).
    The state (``square_avg`` per parameter) lives in ``state_dict()``, so a resumed run
    continues exactly.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, decay: float = 0.9,
                 floor: float = 1e-5, weight_decay: float = 0.0,
                 foreach: bool | None = None) -> None:
        if lr <= 0 or not 0 <= decay < 1 or floor <= 0 or weight_decay < 0:
            raise ValueError(f"RMSpropPylearn2 needs lr > 0, 0 <= decay < 1, floor > 0 and "
                             f"weight_decay >= 0; got lr={lr}, decay={decay}, floor={floor}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "decay": decay, "floor": floor,
                                  "weight_decay": weight_decay, "foreach": foreach})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if not self.state[p]:
                    self.state[p]["square_avg"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format)
            foreach = group.get("foreach")
            if foreach is None:  # as torch's own optimisers choose: on GPUs, not on CPUs
                foreach = all(p.device.type == "cuda" for p in params)
            (_foreach_step if foreach else _loop_step)(
                params, [p.grad for p in params], [self.state[p]["square_avg"] for p in params],
                group["lr"], group["decay"], group["floor"], group["weight_decay"])
        return loss


def _loop_step(params, grads, avgs, lr, decay, floor, wd) -> None:
    for p, g, ms in zip(params, grads, avgs):
        if wd:
            g = g.add(p, alpha=wd)
        ms.mul_(decay).addcmul_(g, g, value=1 - decay)
        p.addcdiv_(g, ms.sqrt().clamp_min_(floor), value=-lr)


def _foreach_step(params, grads, avgs, lr, decay, floor, wd) -> None:
    """The same update as ``_loop_step``, each line one multi-tensor kernel for all of
    ``params`` (a handful of launches per step instead of five per parameter)."""
    if wd:
        grads = torch._foreach_add(grads, params, alpha=wd)
    torch._foreach_mul_(avgs, decay)
    torch._foreach_addcmul_(avgs, grads, grads, value=1 - decay)
    denom = torch._foreach_sqrt(avgs)
    torch._foreach_clamp_min_(denom, floor)
    torch._foreach_addcdiv_(params, grads, denom, value=-lr)


# --------------------------------------------------------------------------- factories


def scaled_groups(module: nn.Module, params: list[nn.Parameter] | None,
                  lr_scale: dict[str, float], prefix: str = "") -> list[dict]:
    """Parameter groups with an lr ``scale`` from the first matching name pattern.

    Patterns match the names inside ``module`` with ``prefix`` stripped (so stage 1 and
    stage 2 use the student's own names, e.g. ``conv1.*``).
    """
    keep = None if params is None else {id(p) for p in params}
    groups: dict[float, list] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad or (keep is not None and id(p) not in keep):
            continue
        short = name[len(prefix):] if name.startswith(prefix) else name
        scale = next((s for pat, s in lr_scale.items() if fnmatch.fnmatchcase(short, pat)), 1.0)
        groups.setdefault(scale, []).append(p)
    return [{"params": ps, "scale": s} for s, ps in groups.items()]


def make_optimizer(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The stage's optimiser. On GPUs every update is one or a few multi-tensor kernels:
    torch's fused SGD and Adam (one kernel for all parameters, asked for here), and foreach
    RMSprop and pylearn2 RMSProp (torch has no fused RMSprop; both choose foreach on GPUs
    themselves); on CPUs torch's own per-parameter choice, which is the faster one there."""
    groups = [{"params": list(g["params"]), "lr": cfg.lr * g.get("scale", 1.0),
               **_own_decay(cfg, g.get("scale", 1.0))} for g in groups]
    params = [p for g in groups for p in g["params"]]
    fused = {"fused": True} if params and all(p.is_cuda for p in params) else {}
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay, **fused)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay,
                                **fused)
    if cfg.name == "rmsprop_pylearn2":  # the authors' RMSProp (fitnets/optim.py)
        return RMSpropPylearn2(groups, lr=cfg.lr, decay=cfg.rmsprop_decay,
                               floor=cfg.rmsprop_floor, weight_decay=cfg.weight_decay)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.rmsprop_decay, eps=cfg.eps,
                                   momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise FitnetsError(f"unknown optimiser {cfg.name!r}; choose one of "
                       f"{', '.join(_choices(OptimConfig, 'name'))}.")


def _own_decay(cfg: OptimConfig, scale: float) -> dict:
    """optim.scale_decay=false: a group's weight decay divided by its lr scale, so that every
    weight shrinks by lr * weight_decay a step (torch couples the decay to the group's lr)."""
    if cfg.scale_decay or scale in (0.0, 1.0):
        return {}
    return {"weight_decay": cfg.weight_decay / scale}


PER_STEP = ("triangle",)  # schedules the Trainer steps after every optimiser step


def make_schedule(opt: torch.optim.Optimizer, cfg: OptimConfig, epochs: int,
                  steps_per_epoch: int = 1):
    """The stage's lr schedule: stepped once an epoch, or once a step for PER_STEP ones."""
    if cfg.schedule == "triangle":
        total = max(epochs * steps_per_epoch, 1)
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: triangle(step, total, *cfg.triangle))
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(opt, cfg.milestones, cfg.gamma)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    if cfg.schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(opt, cfg.gamma)
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _e: 1.0)
    raise FitnetsError(f"unknown lr schedule {cfg.schedule!r}; choose one of "
                       f"{', '.join(_choices(OptimConfig, 'schedule'))}.")


def triangle(step: int, total: int, start: float, peak: float, end: float) -> float:
    """The lr factor after ``step`` of ``total`` steps: ``start`` rising linearly to 1 at step
    ``int(peak * total)``, then falling linearly to ``end`` at ``total`` (airbench's)."""
    top = min(max(int(peak * total), 1), total)
    if step <= top:
        return start + (1.0 - start) * step / top
    return 1.0 + (end - 1.0) * min(step - top, total - top) / (total - top)


class Lookahead:
    """airbench's lookahead (from hlb-cifar10): every ``every`` optimiser steps the weights
    and the floating-point buffers (BatchNorm statistics) are pulled towards their moving
    average and set to it, ``ema = rho * ema + (1 - rho) * w; w = ema``, with ``rho =
    decay^every * (step / total)^3``: almost no averaging early, strong averaging at the end.
    ``sync()`` (at an epoch's end) sets ``w = ema``. Build it after the module has its final
    device and memory layout: it holds the module's own tensors."""

    def __init__(self, module: nn.Module, every: int, total: int, decay: float = 0.95):
        self.live = [t for t in module.state_dict(keep_vars=True).values()
                     if t.is_floating_point()]
        self.ema = [t.detach().clone() for t in self.live]
        self.every, self.total, self.decay, self.steps = every, max(total, 1), decay, 0

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        if self.steps % self.every == 0:
            self._pull(self.decay ** self.every * min(self.steps / self.total, 1.0) ** 3)

    @torch.no_grad()
    def sync(self) -> None:
        self._pull(1.0)

    def _pull(self, rho: float) -> None:
        live = [t.detach() for t in self.live]
        torch._foreach_lerp_(self.ema, live, 1.0 - rho)
        torch._foreach_copy_(live, self.ema)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "ema": [t.clone() for t in self.ema]}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]
        for mine, saved in zip(self.ema, state["ema"]):
            mine.copy_(saved)


def make_lookahead(module: nn.Module, cfg: OptimConfig, total_steps: int) -> Lookahead | None:
    """optim.lookahead's averaging over a stage of ``total_steps`` steps; None when off."""
    return Lookahead(module, cfg.lookahead, total_steps) if cfg.lookahead else None


def _choices(cls, name: str) -> tuple[str, ...]:
    """The Literal choices of a config field: one list per name, the config's."""
    return typing.get_args(typing.get_type_hints(cls)[name])


def max_norm_fn(module: nn.Module, limits: dict[str, float], prefix: str = "") -> Callable:
    """The pylearn2 max-norm constraints: each output unit's incoming weights have L2 norm
    at most the limit of the first pattern matching the parameter's name."""
    targets = []
    for name, p in module.named_parameters():
        short = name[len(prefix):] if name.startswith(prefix) else name
        if p.dim() < 2:
            continue
        limit = next((v for pat, v in limits.items() if fnmatch.fnmatchcase(short, pat)), None)
        if limit is not None:
            targets.append((p, limit))

    @torch.no_grad()
    def constrain() -> None:
        for p, limit in targets:  # in place: one kernel a parameter, no copy
            p.renorm_(2, 0, limit)

    constrain.targets = len(targets)  # the Trainer compiles it (perf.compile) when > 0
    return constrain
