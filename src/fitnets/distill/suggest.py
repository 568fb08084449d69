"""Candidate (guided, hint) layer pairs between any student and teacher, with regressor costs.

Candidates are a network's "main" layers: its direct children whose output is a feature map
(N,C,H,W) or tokens (N,T,D) (a transformer block's), leaving out stand-alone BatchNorm /
activation / dropout modules (their output repeats the layer before them) and global pools.
When a network has fewer than four such children (e.g. one ``features`` Sequential, a
ViT's ``blocks``, or a wrapper such as a Hugging Face model's ``model``), the children of its
outermost Sequential / ModuleList stages, at any depth (``model.bert.encoder.layer``), are
listed too, so that the list stays readable and still reaches inside a single-stage or
wrapped network. A tap on a tuple or dict output (``layer.3[0]``) counts as its module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fitnets.distill.regressor import (
    PROJECTION_KINDS,
    build_regressor,
    describe_regressor,
    hint_nonlinearity,
)
from fitnets.distill.taps import get_layer, layer_shapes, parse_tap
from fitnets.errors import FitnetsError

_SKIP = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
         nn.Dropout, nn.Dropout2d, nn.Identity, nn.GroupNorm, nn.LayerNorm,
         nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)  # a global pool's 1x1 map is no hint
_CONTAINERS = (nn.Sequential, nn.ModuleList)


def _map_shapes(model: nn.Module, input_shape: tuple) -> list[tuple[str, tuple]]:
    """(name, C,H,W) or (name, T,D) of every module with a map or token output, in the order
    their outputs appear."""
    return [(n, s) for n, s in layer_shapes(model, input_shape).items() if len(s) in (2, 3)]


def candidate_layers(model: nn.Module, input_shape: tuple) -> list[tuple[str, tuple]]:
    """The network's main layers with map or token outputs, in forward order: (name, shape)."""
    shapes = _map_shapes(model, input_shape)
    modules = dict(model.named_modules())

    def module(tap: str) -> str:
        return parse_tap(tap)[0]

    def keep(name: str) -> bool:
        return not isinstance(modules[module(name)], _SKIP)

    top = [(n, s) for n, s in shapes if "." not in module(n) and keep(n)]
    if len(top) >= 4:
        return top
    containers = [n for n, m in modules.items() if n and isinstance(m, _CONTAINERS)]
    stages = {n for n in containers if not any(n.startswith(c + ".") for c in containers)}
    return [(n, s) for n, s in shapes
            if keep(n) and ("." not in module(n) or module(n).rpartition(".")[0] in stages)]


def _with(layers: list, name: str | None, model: nn.Module, input_shape: tuple) -> list:
    if name is None or any(n == name for n, _ in layers):
        return layers
    order = _map_shapes(model, input_shape)
    if name not in dict(order):
        return layers
    keep = {n for n, _ in layers} | {name}
    return [(n, s) for n, s in order if n in keep]


def _cost(guided_shape: tuple, hint_shape: tuple, kind: str, nl) -> dict[str, Any]:
    # built on the meta device: an fc regressor between big maps can have 10^9 weights
    try:
        with torch.device("meta"):
            # a projection ends in its own batch norm + ReLU, not the hint layer's
            reg = build_regressor(guided_shape, hint_shape, kind,
                                  None if kind in PROJECTION_KINDS else nl)
            desc = describe_regressor(reg, guided_shape)
    except FitnetsError as e:
        return {"kind": kind, "possible": False, "params": None, "mults": None,
                "error": str(e)}
    return {**desc, "possible": True, "error": None}


def suggest_pairs(
    student: nn.Module, teacher: nn.Module, input_shape: tuple, kind: str = "auto"
) -> list[dict[str, Any]]:
    """Every (guided, hint) pair among the two networks' main layers, with the regressor
    ``kind`` would build (its parameters and multiplications per image, or why it cannot).

    Exactly one row has ``default`` True: the models' ``default_guided`` / ``default_hint``
    when both are set, otherwise the possible pair nearest the middle of both networks.
    """
    input_shape = tuple(input_shape)
    guided = candidate_layers(student, input_shape)
    hints = candidate_layers(teacher, input_shape)
    defaults = (getattr(student, "default_guided", None), getattr(teacher, "default_hint", None))
    # a default deeper than the listed levels is still offered, at its place in forward order
    guided = _with(guided, defaults[0], student, input_shape)
    hints = _with(hints, defaults[1], teacher, input_shape)
    if not guided or not hints:
        who = "student" if not guided else "teacher"
        raise FitnetsError(f"the {who} has no layer with a feature-map (N,C,H,W) output for "
                           f"inputs {input_shape}; hints need convolutional layers.")
    rows: list[dict[str, Any]] = []
    for gi, (g, g_shape) in enumerate(guided):
        for hi, (h, h_shape) in enumerate(hints):
            nl = hint_nonlinearity(get_layer(teacher, h))
            rows.append({
                "guided": g, "guided_shape": g_shape, "guided_depth": gi / len(guided),
                "hint": h, "hint_shape": h_shape, "hint_depth": hi / len(hints),
                **_cost(g_shape, h_shape, kind, nl), "default": False,
            })
    _mark_default(rows, defaults)
    return rows


def middle_distance(row: dict) -> tuple[float, int]:
    """The ranking of pairs: how far the pair's two relative depths are from the middle of
    their networks (summed), then the regressor's parameters (fewer first)."""
    return (abs(row["guided_depth"] - 0.5) + abs(row["hint_depth"] - 0.5), row["params"] or 0)


def _mark_default(rows: list[dict], defaults: tuple) -> None:
    chosen = [r for r in rows if (r["guided"], r["hint"]) == defaults]
    if not chosen:
        possible = [r for r in rows if r["possible"]] or rows
        chosen = [min(possible, key=middle_distance)]
    chosen[0]["default"] = True


def top_pairs(rows: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The ``k`` possible rows of :func:`suggest_pairs` nearest the middle of both networks
    (:func:`middle_distance`), the default pair always among them (first)."""
    possible = sorted((r for r in rows if r["possible"]), key=middle_distance)
    default = [r for r in possible if r["default"]]
    rest = [r for r in possible if not r["default"]]
    return (default + rest)[:max(k, 1)]


def _shape(shape: tuple) -> str:
    return "x".join(str(s) for s in shape)


def _num(n: int | None) -> str:
    if n is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.3g}{suffix}"
    return str(n)


def format_suggestions(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`suggest_pairs` rows; the default pair is marked '*'."""
    header = ["", "guided", "shape", "depth", "hint", "shape", "depth", "regressor", "params",
              "mults"]
    table = [header]
    for r in rows:
        table.append([
            "*" if r["default"] else "", r["guided"], _shape(r["guided_shape"]),
            f"{r['guided_depth']:.2f}", r["hint"], _shape(r["hint_shape"]),
            f"{r['hint_depth']:.2f}", r["kind"] if r["possible"] else f"{r['kind']}: impossible",
            _num(r["params"]), _num(r["mults"]),
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("'*' marks the default pair: the models' own defaults, else the pair nearest "
                 "the middle of both networks")
    return "\n".join(lines)
