"""The building blocks of the paper's nets: a maxout conv "layer" and a spec-driven net.

A *layer* in the paper's sense is one :class:`MaxoutConvBlock` (maxout conv, then an
optional max pool). Its name in the net (``conv1``, ``conv2``, ...) is the name users
give as hint / guided layer, and its output after pooling is what a hint tap sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from fitnets.errors import FitnetsError
from fitnets.models.maxout import MaxoutConv2d, MaxoutLinear, paper_init_


@dataclass(frozen=True)
class ConvSpec:
    """One maxout conv layer: units, pieces, kernel, padding, optional pool window/stride."""

    units: int
    pieces: int = 2
    kernel: int = 3
    padding: int = 1
    pool: int | None = None
    pool_stride: int | None = None
    ceil_mode: bool = False


class MaxoutConvBlock(MaxoutConv2d):
    """Maxout conv followed by an optional max pool (``self.pool``, ``None`` when absent).

    Pooling is PyTorch's floor mode unless ``ceil_mode`` is set: pylearn2 / cuda-convnet
    pooling can round the output size differently, so a layer ported from the authors'
    yaml files may need ``ceil_mode`` to reproduce their map sizes.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        pieces: int,
        kernel_size: int,
        padding: int = 0,
        batchnorm: bool = False,
        pool: int | None = None,
        pool_stride: int | None = None,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, pieces, kernel_size, padding, batchnorm)
        self.pool: nn.MaxPool2d | None = (
            nn.MaxPool2d(pool, stride=pool_stride or pool, ceil_mode=ceil_mode) if pool else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.pool is not None:
            x = self.pool(x)
        return x


class MaxoutNet(nn.Module):
    """A net of maxout conv layers ``conv1..convN``, optional ``fc1`` (maxout linear) and a
    linear ``classifier`` producing pre-softmax logits ``(N, num_classes)``.

    Attributes: ``input_shape`` (C, H, W), ``num_classes``, ``default_hint``,
    ``default_guided``, ``spec`` (a plain dict describing the architecture).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        convs: Sequence[ConvSpec],
        num_classes: int = 10,
        fc: tuple[int, int] | None = None,
        batchnorm: bool = False,
        default_hint: str = "conv1",
        default_guided: str = "conv1",
        name: str = "maxout_net",
    ) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise FitnetsError(f"num_classes must be a positive integer, got {num_classes}")
        if int(input_shape[0]) < 1:
            raise FitnetsError(f"in_channels must be a positive integer, got {input_shape[0]}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        self.default_hint = default_hint
        self.default_guided = default_guided
        channels = self.input_shape[0]
        for i, c in enumerate(convs, start=1):
            block = MaxoutConvBlock(
                channels,
                c.units,
                c.pieces,
                c.kernel,
                c.padding,
                batchnorm,
                c.pool,
                c.pool_stride,
                c.ceil_mode,
            )
            self.add_module(f"conv{i}", block)
            channels = c.units
        # Feature size after the convs, from one dummy image: cheaper to get right than a
        # closed form covering floor/ceil pooling.
        # Eval mode so the dummy pass leaves BatchNorm running statistics untouched.
        self.eval()
        with torch.no_grad():
            h = torch.zeros(1, *self.input_shape)
            for i in range(1, len(convs) + 1):
                h = getattr(self, f"conv{i}")(h)
        self.train()
        features = h[0].numel()
        if features == 0:
            raise FitnetsError(f"input shape {self.input_shape} is too small for {name}")
        if fc is not None:
            self.fc1 = MaxoutLinear(features, fc[0], fc[1])
            features = fc[0]
        self.classifier = nn.Linear(features, self.num_classes)
        self.spec: dict[str, Any] = {
            "name": name,
            "input_shape": self.input_shape,
            "convs": [asdict(c) for c in convs],
            "fc": None if fc is None else {"units": fc[0], "pieces": fc[1]},
            "num_classes": self.num_classes,
            "batchnorm": bool(batchnorm),
        }
        paper_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Children are conv1..convN, [fc1], classifier, in that order; the flatten is a
        # function call (not a child) so the named children are exactly the paper's layers.
        for name, child in self.named_children():
            if name == "classifier":
                break
            x = child(x)
        return self.classifier(torch.flatten(x, 1))
