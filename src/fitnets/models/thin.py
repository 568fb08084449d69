"""Thin CIFAR students of about the same parameter count at several depths (the paper's
depth study, scaled down): ``depth`` conv3x3-BN-ReLU layers, 2x2 max-pooling after each
third of them, global average pooling and one linear classifier.

Not in ``MODELS``; name them as user builders, e.g.
``student.name=fitnets.models.thin:thin_cifar_d5``. The width is chosen so that the
network has about ``params`` parameters (default 30K, the paper's students').

``..._nobn`` builders (``thin_cifar_d9_nobn``, ``thin_cifar_d9_107k_nobn``) leave BatchNorm
out: conv3x3 (with a bias) + ReLU, He-initialised (normal, fan-in, zero biases: the
standard start for a plain ReLU net, He et al. 2015, under which depth alone does not shrink
the signal), so that deep students are hard to train by back-propagation for the reason the
paper's unnormalised maxout students were, and the depth study can ask whether hints help
those and not normalised ones.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def width_for(depth: int, params: int = 30_000, in_channels: int = 3,
              num_classes: int = 10, batchnorm: bool = True) -> int:
    """The width w whose net has about ``params`` parameters: conv weights
    9 * in * w + (depth - 1) * 9 * w^2, BN's scales and shifts 2 * depth * w (without BN:
    the convs' biases, depth * w), classifier w * classes."""
    a = 9 * (depth - 1)
    b = 9 * in_channels + (2 if batchnorm else 1) * depth + num_classes
    if a == 0:
        return max(1, round(params / b))
    return max(1, round((-b + math.sqrt(b * b + 4 * a * params)) / (2 * a)))


class ThinNet(nn.Module):
    def __init__(self, depth: int, width: int, num_classes: int = 10, in_channels: int = 3,
                 batchnorm: bool = True):
        super().__init__()
        pools = {max(1, round(depth * k / 3)) for k in (1, 2, 3)}  # after these layers
        layers: dict[str, nn.Module] = {}
        cin = in_channels
        for i in range(1, depth + 1):
            conv = nn.Conv2d(cin, width, 3, padding=1, bias=not batchnorm)
            if batchnorm:
                layers[f"conv{i}"] = nn.Sequential(conv, nn.BatchNorm2d(width), nn.ReLU())
            else:
                nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
                layers[f"conv{i}"] = nn.Sequential(conv, nn.ReLU())
            if i in pools:
                layers[f"pool{i}"] = nn.MaxPool2d(2)
            cin = width
        self.features = nn.Sequential()
        for name, m in layers.items():
            self.features.add_module(name, m)
        self.classifier = nn.Linear(width, num_classes)
        self.input_shape = (in_channels, 32, 32)
        self.num_classes = num_classes
        # guided layer: the middle conv, as the paper guides a middle layer of the student
        self.default_guided = f"features.conv{(depth + 1) // 2}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def thin_cifar(depth: int, width: int | None = None, num_classes: int = 10,
               in_channels: int = 3, params: int = 30_000, batchnorm: bool = True) -> ThinNet:
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    w = width or width_for(depth, params, in_channels, num_classes, batchnorm)
    return ThinNet(depth, w, num_classes, in_channels, batchnorm)


def builder_name(depth: int, params: int = 30_000, batchnorm: bool = True) -> str:
    """The builder's name in this module: thin_cifar_d5 (30K), thin_cifar_d5_107k, and
    without BatchNorm thin_cifar_d5_nobn, thin_cifar_d5_107k_nobn."""
    return (f"thin_cifar_d{depth}" + ("" if params == 30_000 else f"_{params // 1000}k")
            + ("" if batchnorm else "_nobn"))


def _builder(depth: int, params: int, batchnorm: bool):
    def build(num_classes: int = 10, in_channels: int = 3) -> ThinNet:
        return thin_cifar(depth, num_classes=num_classes, in_channels=in_channels,
                          params=params, batchnorm=batchnorm)

    build.__name__ = build.__qualname__ = builder_name(depth, params, batchnorm)
    build.__doc__ = (f"{depth} conv layers, about {params:,} parameters"
                     + ("." if batchnorm else ", no BatchNorm (He-initialised)."))
    return build


# thin_cifar_d3 ... thin_cifar_d11 (about 30K parameters, the paper's budget),
# thin_cifar_d3_107k ... thin_cifar_d11_107k (about 107K, the paper's FitNet 2 size), and
# each without BatchNorm: thin_cifar_d3_nobn ... thin_cifar_d11_107k_nobn
BUDGETS = (30_000, 107_000)
for _params in BUDGETS:
    for _depth in (1, 3, 5, 7, 9, 11):
        for _bn in (True, False):
            _f = _builder(_depth, _params, _bn)
            globals()[_f.__name__] = _f
del _params, _depth, _bn, _f
