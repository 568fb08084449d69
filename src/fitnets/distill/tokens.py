"""Hint regressors for transformers: token layers (N, T, D) beside feature maps (N, C, H, W).

A transformer block outputs T tokens of width D: optionally some *prefix* tokens (a ViT's
CLS token, DeiT's distillation token) followed by a patch grid of G_h x G_w tokens in row-major
order (timm, Hugging Face and our ``models/vit.py`` all flatten patches that way). The
paper's regressors do not fit: a valid convolution needs maps, and a fully connected one
between two token layers has T_s D_s x T_t D_t weights (65x64 -> 65x192 tokens: 52M).

``token`` regressors map token by token with one linear layer (D_s -> D_t weights, shared by
every token, as TinyBERT / MiniLM-style hidden-state distillation does), after lining the
two layouts up explicitly:

* tokens -> tokens: the same token count -> position by position. Otherwise the prefix
  tokens are kept (when both sides have as many) or dropped (from the prediction *and* the
  hint), and a student patch grid of another size is resized to the teacher's by bilinear
  interpolation on the 2-D grid.
* map -> tokens (a CNN student, a ViT teacher): the map is resized to the teacher's patch
  grid, flattened into one token per position (C features each) and projected C -> D_t;
  the teacher's prefix tokens are dropped from the hint.
* tokens -> map (a ViT student, a CNN teacher): the student's prefix tokens are dropped,
  its patch grid is reshaped into a D_s x G_h x G_w map, resized to the hint's H x W and
  projected D_s -> C per position (a 1x1 convolution).

A regressor that drops hint tokens says so through ``hint_target``: the stage applies it to
the teacher's hint before the loss. Token counts that are neither equal nor patch grids
(e.g. text sequences of other lengths) and token <-> flat-vector pairs have no sensible
mapping and are refused with the choices that remain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fitnets.errors import FitnetsError

MAX_PREFIX = 2  # CLS and DeiT's distillation token


@dataclass(frozen=True)
class Layout:
    """What a layer's output (without the batch) is: a map, tokens or a flat vector."""

    kind: str  # map | tokens | flat
    dim: int  # channels (map), token width (tokens), features (flat)
    prefix: int = 0  # tokens before the patch grid
    grid: tuple[int, int] | None = None  # (rows, cols) of the map or of the patch tokens
    count: int = 0  # tokens in all (tokens only)

    def __str__(self) -> str:
        if self.kind == "map":
            return f"map {self.dim}x{self.grid[0]}x{self.grid[1]}"
        if self.kind == "flat":
            return f"vector of {self.dim}"
        grid = (f" = {self.prefix} prefix + {self.grid[0]}x{self.grid[1]} patches" if self.grid
                else " (a sequence, no patch grid)")
        return f"{self.count} tokens of {self.dim}{grid}"


def _square(n: int) -> int | None:
    r = math.isqrt(n) if n > 0 else 0
    return r if r > 0 and r * r == n else None


def layout(shape: tuple, prefix: int | None = None) -> Layout:
    """The layout of an output of ``shape`` (no batch). For tokens, ``prefix`` is the model's
    number of prefix tokens if it says (``num_prefix_tokens``, as timm's and our ViTs do);
    otherwise the smallest p <= 2 that leaves a square patch grid (65 -> 1 + 8x8)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        return Layout("map", shape[0], grid=(shape[1], shape[2]))
    if len(shape) == 1:
        return Layout("flat", shape[0])
    if len(shape) != 2:
        raise FitnetsError(f"cannot read an output of shape {shape} as a map (C,H,W), tokens "
                           "(T,D) or a vector (F,).")
    t, d = shape
    if prefix is not None:
        side = _square(t - prefix) if 0 <= prefix < t else None
        return Layout("tokens", d, prefix, (side, side) if side else None, t)
    for p in range(min(MAX_PREFIX, t - 1) + 1):
        if side := _square(t - p):
            return Layout("tokens", d, p, (side, side), t)
    return Layout("tokens", d, 0, None, t)


def is_tokens(shape: tuple) -> bool:
    return len(tuple(shape)) == 2


def prefix_tokens(model: nn.Module) -> int | None:
    """The model's own count of prefix tokens, when it has one (timm: num_prefix_tokens)."""
    for m in (model, getattr(model, "model", None)):
        n = getattr(m, "num_prefix_tokens", None)
        if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
            return n
    return None


class TokenRegressor(nn.Module):
    """Line the guided output up with the hint (drop/keep prefix tokens, flatten or reshape a
    grid, resize it), then one linear layer per token or position, then the non-linearity."""

    kind = "token"

    def __init__(self, g: Layout, h: Layout, keep_prefix: bool, act: nn.Module,
                 out_features: int):
        super().__init__()
        self.g, self.h, self.keep_prefix = g, h, keep_prefix
        # the same tokens on both sides: paired position by position, nothing dropped
        self.direct = (g.kind == h.kind == "tokens" and g.count == h.count
                       and g.prefix == h.prefix and (keep_prefix or g.prefix == 0))
        self.proj = nn.Linear(g.dim, out_features)
        self.act = act
        self.hint_shape = ((h.dim, *h.grid) if h.kind == "map" else
                           (h.count if keep_prefix or h.prefix == 0 else h.count - h.prefix,
                            h.dim))

    def hint_target(self, hint: torch.Tensor) -> torch.Tensor:
        """The part of the teacher's hint the prediction is compared with."""
        if self.h.kind == "tokens" and not self.keep_prefix and self.h.prefix:
            return hint[:, self.h.prefix:]
        return hint

    def _grid(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(N, G_h*G_w, D) -> (N, D, G_h, G_w)."""
        return tokens.transpose(1, 2).unflatten(2, grid)

    def _resize(self, m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(m.shape[-2:]) == tuple(size):
            return m
        shrink = m.shape[-2] > size[0] or m.shape[-1] > size[1]  # antialiased: no aliasing
        return F.interpolate(m, size=size, mode="bilinear", align_corners=False, antialias=shrink)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        g, h = self.g, self.h
        if self.direct:
            return self.act(self.proj(v))
        if h.kind == "map":  # tokens -> map: the patch grid as a map, resized, 1x1 projection
            m = self._resize(self._grid(v[:, g.prefix:], g.grid), h.grid)
            return self.act(self.proj(m.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        if g.kind == "map":  # map -> tokens: resized to the teacher's grid, one token each
            patches = self._resize(v, h.grid).flatten(2).transpose(1, 2)
            return self.act(self.proj(patches))
        patches = self._resize(self._grid(v[:, g.prefix:], g.grid), h.grid)
        out = patches.flatten(2).transpose(1, 2)
        if self.keep_prefix and h.prefix:
            out = torch.cat([v[:, :g.prefix], out], dim=1)
        return self.act(self.proj(out))

    def mapping(self) -> str:
        """One line saying what the regressor does, for the log."""
        g, h = self.g, self.h
        steps = []
        if g.kind == "tokens" and g.prefix and not self.keep_prefix:
            steps.append(f"drop the student's {g.prefix} prefix token(s)")
        if h.kind == "tokens" and h.prefix and not self.keep_prefix:
            steps.append(f"drop the teacher's {h.prefix} prefix token(s) from the hint")
        if self.keep_prefix:
            steps.append(f"keep {g.prefix} prefix token(s)")
        if g.kind == "map":
            steps.append("flatten the map into one token per position")
        elif h.kind == "map":
            steps.append("reshape the patch tokens into a map")
        if g.grid and h.grid and g.grid != h.grid:
            steps.append(f"resize the grid {g.grid[0]}x{g.grid[1]} -> {h.grid[0]}x{h.grid[1]} "
                         "(bilinear, antialiased when shrinking)")
        steps.append(f"linear {g.dim} -> {h.dim} per {'position' if h.kind == 'map' else 'token'}")
        return "; ".join(steps)

    def extra_repr(self) -> str:
        return f"{self.g} -> {self.h}: {self.mapping()}"


def build_token_regressor(guided_shape: tuple, hint_shape: tuple, act: nn.Module,
                          cls_token: str = "auto",
                          prefix: tuple[int | None, int | None] = (None, None)
                          ) -> TokenRegressor:
    """A token regressor from ``guided_shape`` to ``hint_shape`` (at least one of them (T, D));
    ``cls_token`` keep | drop | auto (keep when both sides have the same prefix tokens);
    ``prefix`` the models' own prefix counts (None: read from the token count)."""
    g, h = layout(guided_shape, prefix[0]), layout(hint_shape, prefix[1])
    choices = ("Other choices: hints.regressor=fc (one weight per input and output value: "
               f"{(math.prod(guided_shape) + 1) * math.prod(hint_shape):,} weights), or tap "
               "other layers (`fitnets layers`).")
    if g.kind != "tokens" and h.kind != "tokens":
        raise FitnetsError(
            f"a token regressor needs tokens (T, D) on at least one side, but the guided layer "
            f"gives {g} and the hint {h}. For two maps use hints.regressor=conv (the paper's), "
            "interp or conv1x1.")
    if "flat" in (g.kind, h.kind):
        raise FitnetsError(
            f"no token mapping from the guided {g} to the hint {h}: a flat vector has no "
            "tokens to pair with. Tap a token layer on both sides (e.g. a block's output), or "
            "a map on one side. " + choices)
    if cls_token not in ("auto", "keep", "drop"):
        raise FitnetsError(f"hints.cls_token must be auto, keep or drop, got {cls_token!r}.")
    both_tokens = g.kind == h.kind == "tokens"
    if cls_token == "keep" and not (both_tokens and g.prefix == h.prefix and g.prefix > 0):
        raise FitnetsError(
            f"hints.cls_token=keep needs prefix (CLS) tokens on both sides, as many on each, "
            f"but the guided layer gives {g} and the hint {h}. Use hints.cls_token=drop "
            "(compare the patch tokens only) or auto.")
    keep = both_tokens and g.prefix == h.prefix > 0 and cls_token != "drop"
    reg = TokenRegressor(g, h, keep, act, h.dim)
    if not reg.direct:
        missing = [f"the {side}'s" for side, lay in (("guided layer", g), ("hint", h))
                   if lay.kind == "tokens" and lay.grid is None]
        if missing:
            raise FitnetsError(
                f"the guided layer gives {g} and the hint {h}: the token counts differ and "
                f"{' and '.join(missing)} tokens are not a square patch grid (after up to "
                f"{MAX_PREFIX} prefix tokens), so tokens cannot be paired or resized. Pair "
                "layers with the same sequence length. " + choices)
    return reg
