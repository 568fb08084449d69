"""Parameter / multiplication counts, a per-layer table and the paper's Table 5 profile."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fitnets.errors import FitnetsError


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_weights(model: nn.Module) -> int:
    """Trainable weights without biases: what the authors' scripts/computeNumberParams.py
    (adri-romsor/FitNets, lines 18-34) counts for the paper's tables (kernels and weight
    matrices of maxout conv, maxout and softmax layers; no biases)."""
    return sum(p.numel() for n, p in model.named_parameters()
               if p.requires_grad and n.rsplit(".", 1)[-1] == "weight" and p.dim() >= 2)


def dummy_input(model: nn.Module, input_shape: Sequence[int], batch: int = 1) -> torch.Tensor:
    """Zeros of ``(batch, *input_shape)`` on the model's device, of its ``input_dtype``
    (float32 unless the model says otherwise: a text model's ``torch.long`` token ids, 0
    being a valid id, the padding one in BERT-like vocabularies)."""
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    dtype = getattr(model, "input_dtype", None) or torch.float32
    return torch.zeros(batch, *input_shape, device=device, dtype=dtype)


class _EvalMode:
    """Put a model in eval mode for a dummy forward and restore its modes afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modes = [m.training for m in model.modules()]

    def __enter__(self) -> nn.Module:
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for m, mode in zip(self.model.modules(), self.modes):
            m.training = mode


def count_mults(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiplications for one image, counted as the authors did.

    For a maxout conv that is pieces x output positions x kernel area x C_in x C_out, i.e.
    the multiply-accumulates of the conv producing C_out * pieces maps; linear layers add
    in x out. FlopCounterMode counts 2 FLOPs per multiply-accumulate for conv and matmul
    (and nothing for pooling, max or BatchNorm), so MACs = FLOPs / 2.
    """
    with _EvalMode(model), torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            model(dummy_input(model, input_shape))
    return int(counter.get_total_flops()) // 2


def layer_table(model: nn.Module, input_shape: Sequence[int]) -> list[dict[str, Any]]:
    """One row per named sub-module (root skipped): name, type, output shape, params.

    ``params`` counts the module's parameters including its children's, so a block's row
    repeats the total of the rows nested under it. Modules never called in forward get
    ``out_shape`` None.
    """
    shapes: dict[str, tuple[int, ...] | None] = {}
    hooks = []

    def make_hook(name: str):
        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                shapes[name] = tuple(out.shape[1:])

        return hook

    named = [(n, m) for n, m in model.named_modules() if n]
    for name, m in named:
        hooks.append(m.register_forward_hook(make_hook(name)))
    try:
        with _EvalMode(model), torch.no_grad():
            model(dummy_input(model, input_shape))
    finally:
        for h in hooks:
            h.remove()
    return [
        {
            "name": name,
            "type": type(m).__name__,
            "out_shape": shapes.get(name),
            "params": sum(p.numel() for p in m.parameters()),
        }
        for name, m in named
    ]


def count_layers(model: nn.Module) -> int:
    """Layers with weights (conv, fully connected, classifier), as the paper counts depth."""
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


def _time_batch(model: nn.Module, x: torch.Tensor, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    model(x)
    if device.type == "cuda":
        # CUDA kernels run asynchronously: wait for them or we time only the launches.
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def profile(
    models: dict[str, nn.Module],
    input_shape: Sequence[int],
    *,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    teacher: str | None = None,
) -> list[dict[str, Any]]:
    """The paper's Table 5: per model layers, params, mults, time per image, speed-up and
    compression relative to ``teacher`` (the first model when None).

    Time per image is the median over ``repeats`` timings of one batch of ``batch_size``
    under ``torch.inference_mode``, divided by the batch size. Models are moved to
    ``device`` and put in eval mode.
    """
    if not models:
        raise FitnetsError("profile needs at least one model")
    if teacher is None:
        teacher = next(iter(models))
    if teacher not in models:
        raise FitnetsError(f"teacher {teacher!r} is not one of the models: {sorted(models)}")
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise FitnetsError("profile needs batch_size >= 1, repeats >= 1 and warmup >= 0")
    dev = torch.device(device)
    rows: list[dict[str, Any]] = []
    for name, model in models.items():
        model = model.to(dev)
        params = count_params(model)
        mults = count_mults(model, input_shape)
        x = dummy_input(model, input_shape, batch_size)
        if x.is_floating_point():
            x.normal_()
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            times = [_time_batch(model, x, dev) for _ in range(repeats)]
        model.train(was_training)
        rows.append(
            {
                "model": name,
                "layers": count_layers(model),
                "params": params,
                "mults": mults,
                "time_per_image_s": statistics.median(times) / batch_size,
            }
        )
    ref = next(r for r in rows if r["model"] == teacher)
    for r in rows:
        r["speedup"] = ref["time_per_image_s"] / r["time_per_image_s"]
        r["compression"] = ref["params"] / r["params"]
    return rows


def _human(n: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.4g}{suffix}"
    return f"{n:g}"


def format_profile(rows: list[dict[str, Any]]) -> str:
    """Render :func:`profile` rows as a Markdown table."""
    lines = [
        "| model | layers | params | mults | time/image (ms) | speed-up | compression |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['layers']} | {_human(r['params'])} | {_human(r['mults'])} "
            f"| {r['time_per_image_s'] * 1e3:.4f} | {r['speedup']:.2f} "
            f"| {r['compression']:.2f} |"
        )
    return "\n".join(lines)
