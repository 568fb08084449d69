"""The frozen teacher, and where its outputs come from.

A stage asks ``teacher.logits(batch)`` or ``teacher.features(layers, batch)``; whether the
answer is read from the teacher cache (computed once over the training set) or computed by
running the teacher on the batch is decided here and nowhere else.

The rule: a cache is valid only when the teacher sees the same inputs every epoch, i.e. no
random translations (flips are fine: the mirrored view is cached too). ``perf.teacher_cache``
auto uses it whenever that holds; memory/disk insist and are refused with translations.
Evaluation batches (no training-set rows) are always computed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fitnets.config import Config
from fitnets.data.memory import Batch
from fitnets.distill.taps import run_to
from fitnets.distill.teacher_cache import TeacherCache, build_teacher_cache, cache_mode
from fitnets.distributed import Dist
from fitnets.errors import FitnetsError
from fitnets.perf import Perf

LOGITS = "logits"  # the cache's name for the teacher's output


class Teacher:
    """A frozen network (eval mode, no gradients) with an optional cache of its outputs."""

    def __init__(self, net: nn.Module, cfg: Config, perf: Perf, train_x: torch.Tensor | None,
                 batch_size: int, say: Callable[[str], None] = lambda s: None,
                 dist: Dist | None = None):
        self.net = net.eval().requires_grad_(False)
        self.flips = cfg.data.augment_flip
        if train_x is None:  # streamed: no training set in memory to compute it on
            if cfg.perf.teacher_cache not in ("auto", "off"):
                raise FitnetsError(
                    f"perf.teacher_cache={cfg.perf.teacher_cache} needs the training set in "
                    "memory, but it is streamed (its images are decoded afresh, and cropped "
                    "at random, every epoch). Use perf.teacher_cache=auto or off, or "
                    "data.mode=memory if it fits.")
            self.mode, self._why_off = None, "off: the data are streamed"
        else:
            self.mode = cache_mode(cfg.perf.teacher_cache, cfg.data.augment_pad)
            self._why_off = ("off: translations change the teacher's inputs"
                             if cfg.perf.teacher_cache == "auto" and cfg.data.augment_pad
                             else "")
        self._perf, self._x, self._batch_size = perf, train_x, batch_size
        self._say, self._dist = say, dist
        self._caches: dict[str, TeacherCache] = {}

    def describe_cache(self) -> str:
        return f"teacher cache {self.mode or 'off'}" + (f" ({self._why_off})"
                                                         if self._why_off else "")

    def prepare(self, outputs: list[str]) -> None:
        """Compute the cache of each of ``outputs`` (layer names or LOGITS) that is not there
        yet, when caching is on; a stage calls this when it is built."""
        if self.mode is None:
            return
        for what in outputs:
            if what not in self._caches:
                self._caches[what] = build_teacher_cache(
                    self._runner(what), self.net, self._x, what=what, flips=self.flips,
                    mode=self.mode, perf=self._perf, batch_size=self._batch_size, say=self._say,
                    dist=self._dist)

    def logits(self, batch: Batch) -> torch.Tensor:
        return self._get([LOGITS], batch)[0]

    def features(self, layers: list[str], batch: Batch) -> list[torch.Tensor]:
        """The outputs of ``layers`` for ``batch`` (the forward pass stops at the deepest)."""
        return self._get(layers, batch)

    def _get(self, whats: list[str], batch: Batch) -> list[torch.Tensor]:
        if batch.idx is not None and all(w in self._caches for w in whats):
            return [cached(self._caches[w], batch.idx, batch.flipped, batch.x.device)
                    for w in whats]
        # no_grad, not inference_mode: the outputs enter the step's loss, which perf.compile
        # compiles whole, and a compiled backward may save them (an inference tensor
        # cannot be saved for backward: measured, MNIST hint stage under bf16)
        with torch.no_grad():
            if whats == [LOGITS]:
                return [self.net(batch.x)]
            return run_to(self.net, batch.x, whats)

    def _runner(self, what: str) -> Callable[[torch.Tensor], torch.Tensor]:
        if what == LOGITS:
            return self.net
        return lambda x: run_to(self.net, x, [what])[0]


def cached(cache: TeacherCache, idx: torch.Tensor, flipped: torch.Tensor | None,
           device: torch.device | None = None) -> torch.Tensor:
    """The cached outputs of training rows ``idx`` (mirrored where ``flipped``), on
    ``device`` (default: ``idx``'s)."""
    rows = _move(idx, cache.store.device)
    if flipped is not None:
        if len(cache.store) < 2 * cache.n:
            raise FitnetsError("the teacher cache has no mirrored view but the batch has "
                               "flipped images; rebuild it with flips.")
        rows = rows + cache.n * _move(flipped, rows.device).long()
    return cache.store[rows].to(device or idx.device, non_blocking=True)


def _move(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``: without waiting for the GPU's stream, except from a GPU to the
    host, where the rows must have arrived before the host gathers with them. The loop's
    rows and flips are drawn on the host (data/memory.py), so a disk cache read for a GPU
    batch makes no such copy."""
    return t.to(device, non_blocking=not (t.is_cuda and device.type == "cpu"))
