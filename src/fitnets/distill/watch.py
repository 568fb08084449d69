"""Signs that a stage has stopped learning, as pure functions the hint stages check after
every epoch (the Trainer prints what they find, once per stage).

Found running a ResNet-56 -> ResNet-20 hint stage (layer2 -> layer2, conv1x1 regressor)
with SGD lr 0.05, momentum 0.9 and the paper's summed hint loss: the first steps' gradients,
summed over 32x16x16 values per image, blew the regressor's weights up; its batch norm and
ReLU then gave zeros for every image and the loss froze at 0.5 * ||target||^2 (34110 ->
273.9 -> 262 -> 261.4 on 2,000 CIFAR-10 images). With the mean reduction it trains
(0.196 -> 0.027 in 4 epochs).
"""

from __future__ import annotations

import torch

WINDOW = 3  # epochs
RTOL = 1e-3  # relative change below which a loss counts as not moving


def loss_stalled(losses: list[float], window: int = WINDOW, rtol: float = RTOL) -> bool:
    """True when the last ``window`` epoch losses differ by at most ``rtol`` of the largest,
    and the loss is not (near) zero."""
    if len(losses) < window:
        return False
    last = losses[-window:]
    hi, lo = max(last), min(last)
    return hi > 1e-8 and hi - lo <= rtol * hi


def constant_output(pred: torch.Tensor) -> bool:
    """True when a regressor gives (nearly) the same output for every example of a batch:
    almost all zeros (a dead ReLU), or no variation over the batch."""
    p = pred.detach().float().flatten(1)
    if len(p) < 2:
        return False
    if (p == 0).float().mean() > 0.99:
        return True
    return bool(p.std(0).max() <= 1e-6 * (p.abs().max() + 1e-12))


def advice(stage: str, lr: float, reduction: str, size: int) -> str:
    """What to try, with the stage's own values."""
    scale = (f" (now {reduction}: the paper's sum scales the loss and its gradient by the "
             f"{size:,} values of each hint map)" if reduction != "mean" else "")
    return (f"Lower {stage}.optim.lr (now {lr:g}), use hints.reduction=mean{scale}, or "
            "hints.nonlinearity=none.")
