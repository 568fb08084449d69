"""Regressors r(v_g; W_r) that map the student's guided layer to the teacher's hint shape.

The paper's choice is a valid (unpadded) convolution whose kernel k_i = N_gi - N_hi + 1 makes
the spatial sizes agree; a fully connected regressor is the alternative; none is needed when
the shapes already agree. The regressor ends in the hint layer's own non-linearity, so that
it can actually reach the hint's range (a maxout hint gets a maxout regressor with the same
number of pieces).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fitnets.distill.tokens import build_token_regressor, is_tokens
from fitnets.errors import FitnetsError
from fitnets.names import PROJECTION_KINDS, REGRESSOR_KINDS

_ACTIVATIONS = {nn.ReLU: "relu", nn.ReLU6: "relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}


@dataclass(frozen=True)
class Nonlinearity:
    kind: str  # maxout | relu | sigmoid | tanh | none
    pieces: int = 1

    def __str__(self) -> str:
        return f"maxout({self.pieces} pieces)" if self.kind == "maxout" else self.kind


def hint_nonlinearity(layer: nn.Module) -> Nonlinearity:
    """The non-linearity a layer's output ends in: maxout (with pieces), relu, ... or none."""
    pieces = getattr(layer, "maxout_pieces", None)
    if pieces:
        return Nonlinearity("maxout", int(pieces))
    leaves = [m for m in layer.modules() if not list(m.children())]
    last = leaves[-1] if leaves else layer
    # a trailing pool/dropout/flatten does not change which non-linearity came before it
    for m in reversed(leaves):
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Dropout,
                          nn.Flatten, nn.Identity)):
            continue
        last = m
        break
    if getattr(last, "maxout_pieces", None):
        return Nonlinearity("maxout", int(last.maxout_pieces))
    for cls, kind in _ACTIVATIONS.items():
        if isinstance(last, cls):
            return Nonlinearity(kind)
    return Nonlinearity("none")


class _Act(nn.Module):
    def __init__(self, nl: Nonlinearity):
        super().__init__()
        self.kind, self.pieces = nl.kind, nl.pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "maxout":  # channel c = max over channels c*k .. c*k+k-1
            return x.unflatten(1, (-1, self.pieces)).amax(dim=2)
        if self.kind == "relu":
            return torch.relu(x)
        if self.kind == "sigmoid":
            return torch.sigmoid(x)
        if self.kind == "tanh":
            return torch.tanh(x)
        return x


class Regressor(nn.Module):
    """core (conv or linear producing out*pieces features) -> non-linearity -> hint shape."""

    def __init__(self, kind: str, core: nn.Module, nl: Nonlinearity, hint_shape: tuple):
        super().__init__()
        self.kind = kind
        self.core = core
        self.act = _Act(nl)
        self.hint_shape = tuple(hint_shape)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if self.kind == "fc":
            v = v.flatten(1)
        return self.act(self.core(v)).reshape(v.shape[0], *self.hint_shape)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, out={self.hint_shape}"


def _fmt(shape: tuple) -> str:
    return "x".join(str(s) for s in shape)


def build_regressor(
    guided_shape: tuple,
    hint_shape: tuple,
    kind: str = "auto",
    nl: Nonlinearity | None = None,
    cls_token: str = "auto",
    prefix: tuple[int | None, int | None] = (None, None),
) -> nn.Module:
    """A regressor from ``guided_shape`` (C,H,W), (T,D) tokens or (F,) to ``hint_shape``;
    Identity for none. Token layers get a per-token linear regressor (distill/tokens.py;
    ``cls_token`` and ``prefix`` say how their CLS tokens are paired)."""
    if nl is None:  # a projection ends in batch norm + ReLU (as in CRD); the others: nothing
        nl = Nonlinearity("relu" if kind in PROJECTION_KINDS else "none")
    guided_shape, hint_shape = tuple(guided_shape), tuple(hint_shape)
    same = guided_shape == hint_shape
    spatial = len(guided_shape) == 3 and len(hint_shape) == 3
    tokens = is_tokens(guided_shape) or is_tokens(hint_shape)
    if kind == "auto":
        if same and nl.kind in ("none", "relu"):
            kind = "none"
        elif tokens:
            kind = "token"
        elif spatial and all(g >= h for g, h in zip(guided_shape[1:], hint_shape[1:])):
            kind = "conv"
        else:
            kind = "fc"
    if kind == "token":
        if nl.kind == "maxout":
            raise FitnetsError(
                f"a token regressor ends in relu, sigmoid, tanh or nothing, not {nl}; set "
                "hints.nonlinearity=none or relu.")
        return build_token_regressor(guided_shape, hint_shape, _Act(nl), cls_token, prefix)
    if kind == "none":
        if not same:
            raise FitnetsError(
                f"regressor 'none' needs the guided and hint outputs to have the same shape, but "
                f"the guided layer gives {_fmt(guided_shape)} and the hint {_fmt(hint_shape)}. "
                "Use hints.regressor=conv (the paper's) or fc."
            )
        return nn.Identity()
    out = nl.pieces if nl.kind == "maxout" else 1
    if kind == "conv":
        _check_conv(guided_shape, hint_shape)
        kernel = (guided_shape[1] - hint_shape[1] + 1, guided_shape[2] - hint_shape[2] + 1)
        core = nn.Conv2d(guided_shape[0], hint_shape[0] * out, kernel)
    elif kind == "fc":
        core = nn.Linear(math.prod(guided_shape), math.prod(hint_shape) * out)
    elif kind in PROJECTION_KINDS:
        return _projection(kind, guided_shape, hint_shape, nl)
    else:
        raise FitnetsError(f"unknown regressor '{kind}'; choose one of {', '.join(KINDS)}.")
    return Regressor(kind, core, nl, hint_shape)


def _check_conv(guided_shape: tuple, hint_shape: tuple) -> None:
    if len(guided_shape) != 3 or len(hint_shape) != 3:
        raise FitnetsError(
            f"a convolutional regressor needs feature maps (C,H,W) on both sides, but the guided "
            f"layer gives {_fmt(guided_shape)} and the hint {_fmt(hint_shape)}. Kinds that work "
            f"for these shapes: {', '.join(possible_kinds(guided_shape, hint_shape))} (token: "
            "one linear layer per token, for transformer layers); or choose convolutional "
            "layers."
        )
    g, h = guided_shape[1:], hint_shape[1:]
    if h[0] > g[0] or h[1] > g[1]:
        fc = (math.prod(guided_shape) + 1) * math.prod(hint_shape)
        raise FitnetsError(
            f"the hint map ({_fmt(hint_shape)}) is spatially larger than the guided map "
            f"({_fmt(guided_shape)}): a valid convolution can only shrink a map, so no "
            "convolutional regressor can match them. Choose a deeper teacher hint layer or a "
            f"shallower student guided layer, or use hints.regressor=fc (about {fc:,} weights)."
        )


# --------------------------------------------------------------------------- projections

KINDS = REGRESSOR_KINDS  # hints.regressor's choices (fitnets.names, the config's too)


class ProjectionRegressor(nn.Sequential):
    """[optional bilinear resize] -> conv (1x1, strided 3x3 or transposed) -> BN -> ReLU."""

    def __init__(self, kind: str, hint_shape: tuple, *layers: nn.Module):
        super().__init__(*layers)
        self.kind = kind
        self.hint_shape = tuple(hint_shape)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, out={self.hint_shape}"


class Resize(nn.Module):
    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"size={self.size}"


def _factors(big: tuple, small: tuple) -> tuple[int, int] | None:
    """Integer factors f with big = f * small per spatial dimension, or None."""
    if any(b % s for b, s in zip(big, small)):
        return None
    return tuple(b // s for b, s in zip(big, small))


def possible_kinds(guided_shape: tuple, hint_shape: tuple) -> list[str]:
    """Every regressor kind that can map ``guided_shape`` to ``hint_shape``."""
    g, h = tuple(guided_shape), tuple(hint_shape)
    kinds = ["none"] if g == h else []
    if len(g) == 3 and len(h) == 3:
        if g[1] >= h[1] and g[2] >= h[2]:
            kinds.append("conv")
        if g[1:] == h[1:]:
            kinds.append("conv1x1")
        if _factors(g[1:], h[1:]):
            kinds.append("strided")
        if _factors(h[1:], g[1:]):
            kinds.append("transposed")
        kinds.append("interp")
    if is_tokens(g) or is_tokens(h):
        try:
            build_token_regressor(g, h, nn.Identity())
            kinds.append("token")
        except FitnetsError:
            pass
    kinds.append("fc")
    return kinds


def _projection(kind: str, guided_shape: tuple, hint_shape: tuple,
                nl: Nonlinearity = Nonlinearity("relu")) -> nn.Module:
    """conv (+ resize) -> batch norm -> ``nl`` (relu, as CRD's projections, or none)."""
    if nl.kind not in ("relu", "none"):
        raise FitnetsError(f"regressor '{kind}' ends in its batch norm and then relu or "
                           f"nothing, not {nl}; use hints.nonlinearity=auto, relu or none, or "
                           "hints.regressor=conv.")
    if len(guided_shape) != 3 or len(hint_shape) != 3:
        raise FitnetsError(
            f"regressor '{kind}' needs feature maps (C,H,W) on both sides, but the guided "
            f"layer gives {_fmt(guided_shape)} and the hint {_fmt(hint_shape)}. Kinds that "
            f"work: {', '.join(possible_kinds(guided_shape, hint_shape))}."
        )
    cin, cout = guided_shape[0], hint_shape[0]
    g, h = guided_shape[1:], hint_shape[1:]
    pre: list[nn.Module] = []
    if kind == "conv1x1" and g == h:
        conv = nn.Conv2d(cin, cout, 1, bias=False)
    elif kind == "strided" and (f := _factors(g, h)):
        conv = nn.Conv2d(cin, cout, 3, stride=f, padding=1, bias=False)
    elif kind == "transposed" and (f := _factors(h, g)):
        conv = nn.ConvTranspose2d(cin, cout, f, stride=f, bias=False)
    elif kind == "interp":
        pre = [Resize(h)] if g != h else []
        conv = nn.Conv2d(cin, cout, 1, bias=False)
    else:
        need = {
            "conv1x1": "the same spatial size on both sides",
            "strided": "a guided map an integer factor larger than the hint (e.g. 16x16 -> 8x8)",
            "transposed": "a guided map an integer factor smaller than the hint (8x8 -> 16x16)",
        }[kind]
        raise FitnetsError(
            f"regressor '{kind}' needs {need}, but the guided layer gives {_fmt(guided_shape)} "
            f"and the hint {_fmt(hint_shape)}. Kinds that work for these shapes: "
            f"{', '.join(possible_kinds(guided_shape, hint_shape))}."
        )
    end = [nn.ReLU()] if nl.kind == "relu" else []
    return ProjectionRegressor(kind, hint_shape, *pre, conv, nn.BatchNorm2d(cout), *end)


def describe_regressor(module: nn.Module, guided_shape: tuple) -> dict:
    """Kind, parameter count and multiplications per image of a built regressor."""
    from fitnets.models.counting import count_mults

    return {
        "kind": getattr(module, "kind", "none"),
        "params": count_params(module),
        "mults": count_mults(module, tuple(guided_shape)) if count_params(module) else 0,
    }


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
