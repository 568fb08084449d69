"""Maxout units, the authors' initialisation and the pylearn2 max-norm constraints.

Every hidden layer of the paper's teachers and FitNets is a maxout layer (Goodfellow et
al. 2013): a layer with ``O`` outputs and ``k`` pieces computes ``k * O`` linear features
and keeps the maximum of each group of ``k`` consecutive ones.
"""

from __future__ import annotations

import torch
from torch import nn

from fitnets.errors import FitnetsError

# torch.compiler.is_compiling is torch >= 2.3; torch._dynamo's is the older spelling
_compiling = getattr(torch.compiler, "is_compiling", None) or torch._dynamo.is_compiling


def _max_last(grouped: torch.Tensor) -> torch.Tensor:
    """The max over the last dim (the pieces) of ``grouped``, by the fastest exact route.

    A reduction over a dim of 2-5 elements is slow on CPUs: ``max(dim)`` took 10.6 ms where
    elementwise ``torch.maximum`` over the pieces took 1.6 ms ((128, 21, 21, 48, 2) bf16,
    channels-last, 2-core AMD EPYC). So the forward is ``maximum`` over the pieces; when a
    gradient is needed, ``_MaxPieces`` also keeps which piece won (the first at exact ties,
    as ``max(dim)`` does) and its backward is ``max(dim)``'s own (a scatter through those
    indices): the same values and gradients to the bit, 12.5 ms for forward and backward
    where ``max(dim)`` took 15.4 ms. (``amax`` is not used for training: its backward
    builds an equality mask and divides, measured 2x slower on CPU.) Under torch.compile
    and tracing the plain ``max(dim)``, which the compilers handle themselves.
    """
    if _compiling() or torch.jit.is_tracing():
        return grouped.max(dim=-1).values
    if torch.is_grad_enabled() and grouped.requires_grad:
        return _MaxPieces.apply(grouped)
    out, *rest = grouped.unbind(-1)
    for piece in rest:
        out = torch.maximum(out, piece)
    return out


class _MaxPieces(torch.autograd.Function):
    """max over the last dim: ``torch.maximum``'s forward, ``max(dim)``'s backward."""

    @staticmethod
    def forward(ctx, grouped: torch.Tensor) -> torch.Tensor:
        pieces = grouped.unbind(-1)
        out, idx = pieces[0], torch.zeros(pieces[0].shape, dtype=torch.long,
                                          device=grouped.device)
        for i, piece in enumerate(pieces[1:], 1):
            won = piece > out  # strictly: the first piece keeps an exact tie
            out = torch.maximum(out, piece)  # a NaN in any piece propagates, as in max(dim)
            idx.masked_fill_(won, i)
        ctx.save_for_backward(idx)
        ctx.shape = grouped.shape
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (idx,) = ctx.saved_tensors
        return torch.ops.aten.value_selecting_reduction_backward(grad, -1, idx, ctx.shape,
                                                                 False)


class Maxout(nn.Module):
    """Max over groups of ``pieces`` consecutive channels of dim 1.

    Input ``(N, C * k, ...)`` gives ``(N, C, ...)``; output channel ``c`` is the max over
    input channels ``c*k .. c*k + k - 1`` (pylearn2's grouping: pieces are adjacent).
    """

    def __init__(self, pieces: int) -> None:
        super().__init__()
        if int(pieces) < 1:
            raise FitnetsError(f"maxout needs pieces >= 1, got {pieces}")
        self.pieces = int(pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        if channels % self.pieces:
            raise ValueError(
                f"Maxout({self.pieces}) got {channels} channels, not a multiple of {self.pieces}"
            )
        k = self.pieces
        if k == 1:
            return x
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
                memory_format=torch.channels_last):
            # channels-last: a group's pieces are adjacent in memory; keep the layout.
            n, _, h, w = x.shape
            grouped = x.permute(0, 2, 3, 1).reshape(n, h, w, channels // k, k)
            return _max_last(grouped).permute(0, 3, 1, 2)
        # (N, C*k, ...) -> (N, C, k, ...): consecutive channels end up in the same group.
        grouped = x.reshape(x.shape[0], channels // k, k, *x.shape[2:])
        return _max_last(grouped.movedim(2, -1))

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


class MaxoutConv2d(nn.Module):
    """A convolution to ``out_channels * pieces`` maps, optional BatchNorm, then maxout."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        pieces: int,
        kernel_size: int,
        padding: int = 0,
        batchnorm: bool = False,
        untied_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels * pieces, kernel_size, padding=padding,
                              bias=untied_size is None)
        # Untied biases (pylearn2's MaxoutConvC01B with tied_b=False, its default, which the
        # MNIST yaml files keep): one bias per detector channel *and position*, added before
        # the max. Stored flat so that max-norm (dim >= 2 only) never touches it.
        self.untied_size = None if untied_size is None else tuple(int(s) for s in untied_size)
        self.untied_bias: nn.Parameter | None = None
        if self.untied_size is not None:
            n = out_channels * pieces * self.untied_size[0] * self.untied_size[1]
            self.untied_bias = nn.Parameter(torch.zeros(n))
        # BatchNorm sits before the max so each piece is normalised on its own, as a
        # pre-activation would be; the 2015 paper had no BatchNorm at all.
        self.bn: nn.BatchNorm2d | None = (
            nn.BatchNorm2d(out_channels * pieces) if batchnorm else None
        )
        self.maxout = Maxout(pieces)
        self.maxout_pieces = int(pieces)
        self.out_channels = int(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.untied_bias is not None:
            x = x + self.untied_bias.view(1, -1, *self.untied_size)
        if self.bn is not None:
            x = self.bn(x)
        return self.maxout(x)


class MaxoutLinear(nn.Module):
    """Flatten ``(N, ...)`` to ``(N, F)``, a linear map to ``out_features * pieces``, maxout."""

    def __init__(self, in_features: int, out_features: int, pieces: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features * pieces)
        self.maxout = Maxout(pieces)
        self.maxout_pieces = int(pieces)
        self.out_features = int(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxout(self.linear(torch.flatten(x, 1)))


def paper_init_(module: nn.Module, scale: float = 0.005) -> nn.Module:
    """The authors' initialisation, in place: every conv/linear weight ~ U(-scale, scale),
    every bias zero (pylearn2 ``irange: .005``). Returns ``module``."""
    if scale < 0:
        raise FitnetsError(f"init scale must be >= 0, got {scale}")
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.uniform_(-scale, scale)
                if m.bias is not None:
                    m.bias.zero_()
    return module


def apply_max_norm_(
    module: nn.Module, conv_max: float | None = 0.9, fc_max: float | None = 1.9365
) -> nn.Module:
    """pylearn2's max-norm constraints, in place; call after each optimiser step.

    Each conv output filter (a slice ``weight[o]`` over in_channels x kh x kw) is rescaled
    to L2 norm at most ``conv_max``; each linear "column" in pylearn2's (in, out) layout,
    i.e. the weights into one output unit = one row of ``nn.Linear.weight``, to at most
    ``fc_max``. ``None`` skips that kind of layer. Smaller norms are left untouched.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d) and conv_max is not None:
                limit = conv_max
            elif isinstance(m, nn.Linear) and fc_max is not None:
                limit = fc_max
            else:
                continue
            # renorm over dim 0 rescales each sub-tensor weight[i] whose norm exceeds limit.
            m.weight.copy_(torch.renorm(m.weight, p=2, dim=0, maxnorm=limit))
    return module
