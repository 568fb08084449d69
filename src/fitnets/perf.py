"""Precision and memory-layout switches, resolved once per run for its device.

The loop runs every loss and evaluation under ``Perf.autocast()``, puts each batch in
``Perf.layout``, and scales fp16 losses with ``Perf.scaler()``; losses themselves are
computed in fp32 (see distill/losses.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from fitnets.config import PerfConfig
from fitnets.errors import FitnetsError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matmuls/convolutions run faster than fp32 on this CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class Perf:
    device: torch.device
    precision: str = "fp32"  # fp32 | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False  # compiled with mode="reduce-overhead" (Trainer.fit)

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES.get(self.precision, torch.float32)

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare(self, module: nn.Module) -> nn.Module:
        """Move ``module``'s 4-d weights to the chosen layout (in place); returns it."""
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def scaler(self) -> torch.amp.GradScaler:
        """Loss scaling, needed for fp16 only (bf16 has fp32's exponent range)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def describe(self) -> str:
        return (f"precision {self.precision}"
                f"{' autocast' if self.precision != 'fp32' else ''}, "
                f"{'channels_last' if self.channels_last else 'contiguous'} layout, "
                f"compile {'on' if self.compile else 'off'}"
                f"{' with CUDA graphs' if self.cuda_graphs else ''}")


FP32 = Perf(torch.device("cpu"))


def resolve_perf(cfg: PerfConfig, device: torch.device, processes: int = 1) -> Perf:
    """The switches for ``device`` (``processes``: the run's, under torchrun): explicit
    values are kept, ``auto`` picks per device."""
    cuda = device.type == "cuda"
    precision = cfg.precision
    if precision == "fp16" and not cuda:
        raise FitnetsError(
            f"perf.precision=fp16 needs a CUDA device, but this run is on {device.type}: "
            "fp16 autocast is not supported on the CPU. Use bf16 (fast on CPUs with AVX-512 "
            "BF16 or AMX), fp32 or auto."
        )
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise FitnetsError("perf.precision=bf16: this GPU has no bf16 support; use fp16 or fp32.")
    if precision == "auto":
        if cuda:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device.type == "cpu":
            precision = "bf16" if cpu_has_native_bf16() else "fp32"
        else:
            precision = "fp32"
    channels_last = cfg.channels_last
    if channels_last == "auto":
        channels_last = device.type in ("cpu", "cuda")
    graphs = cfg.cuda_graphs
    if graphs is True and not cuda:
        raise FitnetsError(
            f"perf.cuda_graphs=true needs a CUDA device, but this run is on {device.type}. "
            "Use perf.cuda_graphs=auto (on only where it applies) or false.")
    if graphs is True and processes > 1:
        raise FitnetsError(
            f"perf.cuda_graphs=true: this run has {processes} processes, and a captured step "
            "cannot hold DDP's gradient all-reduce. Use perf.cuda_graphs=auto or false "
            "(perf.compile=true still compiles each process's step).")
    if graphs == "auto":
        graphs = cuda and cfg.compile and processes == 1
    return Perf(device, precision, bool(channels_last), cfg.compile or graphs, bool(graphs))
