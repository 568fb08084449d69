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

from collections.abc import Iterable

import torch
from torch.optim import Optimizer


class RMSpropPylearn2(Optimizer):
    """pylearn2's RMSProp: ``p -= lr * g / max(sqrt(ms), floor)`` (module docstring).

    ``weight_decay`` adds ``weight_decay * p`` to the gradient first (an L2 term in the
    cost, as pylearn2 would write it). The state (``square_avg`` per parameter) lives in
    ``state_dict()``, so a resumed run continues exactly.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, decay: float = 0.9,
                 floor: float = 1e-5, weight_decay: float = 0.0) -> None:
        if lr <= 0 or not 0 <= decay < 1 or floor <= 0 or weight_decay < 0:
            raise ValueError(f"RMSpropPylearn2 needs lr > 0, 0 <= decay < 1, floor > 0 and "
                             f"weight_decay >= 0; got lr={lr}, decay={decay}, floor={floor}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "decay": decay, "floor": floor,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            decay, floor, wd = group["decay"], group["floor"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                ms = state["square_avg"]
                ms.mul_(decay).addcmul_(g, g, value=1 - decay)
                p.addcdiv_(g, ms.sqrt().clamp_min_(floor), value=-group["lr"])
        return loss
