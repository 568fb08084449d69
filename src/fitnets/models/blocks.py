"""The building blocks of the paper's nets: a maxout conv "layer" and a spec-driven net.

A *layer* in the paper's sense is one :class:`MaxoutConvBlock` (maxout conv, then an
optional max pool). Its name in the net (``conv1``, ``conv2``, ...) is the name users
give as hint / guided layer, and its output after pooling is what a hint tap sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
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


@dataclass(frozen=True)
class MaxoutOptions:
    """Switches of the built-in maxout nets that follow the authors' pylearn2 code.

    Defaults are this project's original behaviour; the paper recipes set the authors'.
    ``pool_rounding``: ``floor`` (PyTorch) or ``ceil``: cuda-convnet's max pool (the op
    under pylearn2's MaxoutConvC01B) has ceil((n - k) / s) + 1 outputs
    (pylearn2/sandbox/cuda_convnet/pool.py, line 258), which PyTorch's ceil_mode gives.
    ``untied_biases``: one bias per detector channel and position (pylearn2's default
    tied_b=False, kept by the MNIST yaml files). ``input_dropout`` / ``hidden_dropout``:
    drop probabilities of the first layer's input and of every later layer's input
    (classifier included), in training only, as pylearn2's Dropout cost does
    (pylearn2/models/mlp.py, MLP.dropout_fprop / apply_dropout: one mask per element and
    example). ``input_dropout_rescale``: divide kept inputs by the keep probability (the
    default of pylearn2's Dropout); the maxout paper's yaml files set ``input_scales: {h0:
    1.}``, i.e. no rescaling of the image, while hidden inputs are rescaled (scale 2 at p=.5).
    """

    pool_rounding: str = "floor"
    untied_biases: bool = False
    input_dropout: float = 0.0
    hidden_dropout: float = 0.0
    input_dropout_rescale: bool = True

    def __post_init__(self) -> None:
        if self.pool_rounding not in ("floor", "ceil"):
            raise FitnetsError(f"pool_rounding must be 'floor' or 'ceil', got "
                               f"{self.pool_rounding!r}")
        for name in ("input_dropout", "hidden_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise FitnetsError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @classmethod
    def of(cls, mcfg: Any) -> MaxoutOptions:
        """From a ModelConfig (any object with its pool_rounding / dropout_* fields)."""
        return cls(mcfg.pool_rounding, mcfg.untied_biases, mcfg.dropout_input,
                   mcfg.dropout_hidden, mcfg.dropout_input_rescale)


def dropout_inputs(x: torch.Tensor, p: float, rescale: bool, training: bool) -> torch.Tensor:
    """pylearn2's dropout of a layer's input: keep each element with probability 1 - p and
    multiply kept ones by 1 / (1 - p) if ``rescale`` (else by 1); identity outside training."""
    if not training or p == 0:
        return x
    mask = torch.empty_like(x).bernoulli_(1.0 - p)
    return x * mask * (1.0 / (1.0 - p) if rescale else 1.0)


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
        untied_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, pieces, kernel_size, padding, batchnorm,
                         untied_size)
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
        options: MaxoutOptions | None = None,
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
        self.options = options or MaxoutOptions()
        if self.options.pool_rounding == "ceil":
            convs = [replace(c, ceil_mode=True) if c.pool else c for c in convs]
        features = self._add_convs(convs, batchnorm, name)
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
            "options": asdict(self.options),
        }
        paper_init_(self)

    def _add_convs(self, convs: Sequence[ConvSpec], batchnorm: bool, name: str) -> int:
        """Add conv1..convN; returns the number of features after the last one."""
        channels = self.input_shape[0]
        # Map sizes come from one dummy image pushed through each block as it is built:
        # cheaper to get right than a closed form covering floor/ceil pooling. Eval mode so
        # the dummy pass leaves BatchNorm running statistics untouched.
        h = torch.zeros(1, *self.input_shape)
        for i, c in enumerate(convs, start=1):
            untied = None
            if self.options.untied_biases:
                untied = tuple(n + 2 * c.padding - c.kernel + 1 for n in h.shape[2:])
                if min(untied) < 1:
                    raise FitnetsError(f"input shape {self.input_shape} is too small for {name}")
            block = MaxoutConvBlock(channels, c.units, c.pieces, c.kernel, c.padding, batchnorm,
                                    c.pool, c.pool_stride, c.ceil_mode, untied)
            self.add_module(f"conv{i}", block)
            channels = c.units
            with torch.no_grad():
                h = block.eval()(h)
        self.train()
        return h[0].numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Children are conv1..convN, [fc1], classifier, in that order; the flatten is a
        # function call (not a child) so the named children are exactly the paper's layers.
        o = self.options
        for i, (name, child) in enumerate(self.named_children()):
            if name == "classifier":
                break
            x = dropout_inputs(x, o.hidden_dropout if i else o.input_dropout,
                               o.input_dropout_rescale or i > 0, self.training)
            x = child(x)
        x = dropout_inputs(torch.flatten(x, 1), o.hidden_dropout, True, self.training)
        return self.classifier(x)
