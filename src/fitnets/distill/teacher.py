"""The frozen teacher, and where its outputs come from.

A stage asks ``teacher.logits(batch)`` or ``teacher.features(layers, batch)``; whether the
answer is read from the teacher bank (computed once over every view of the training set:
distill/teacher_cache.py) or computed by running the teacher on the batch is decided here
and nowhere else.

The rule: ``perf.teacher_cache`` memory/disk build the bank (every flip and translation
offset of every training image); auto uses it without translations (few views), and with
them when a bank is already on disk or when building it costs no more teacher forwards than
the stage would compute inline (views <= the stage's epochs); otherwise the teacher runs on
each batch. Evaluation batches (no training-set rows) are always computed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fitnets.config import Config
from fitnets.data.augment import view_count
from fitnets.data.memory import Batch
from fitnets.distill.taps import run_to
from fitnets.distill.teacher_cache import (
    TeacherCache,
    build_teacher_cache,
    cache_mode,
    pack_topk,
    unpack_topk,
)
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
        self.flips = bool(cfg.data.augment_flip)  # random or alternating: 2 flip views
        self.pad = cfg.data.augment_pad
        self.fill = cfg.data.augment_pad_mode  # what translations bring in from the border
        if train_x is None:  # streamed: no training set in memory to compute it on
            if cfg.perf.teacher_cache not in ("auto", "off"):
                raise FitnetsError(
                    f"perf.teacher_cache={cfg.perf.teacher_cache} needs the training set in "
                    "memory, but it is streamed (its images are decoded afresh, and cropped "
                    "at random, every epoch). Use perf.teacher_cache=auto or off, or "
                    "data.mode=memory if it fits.")
            self.mode, self._why_off = None, "off: the data are streamed"
        else:
            self.mode = cache_mode(cfg.perf.teacher_cache, self.pad)
            views = view_count(self.pad, self.flips)
            self._why_off = (f"a bank of all {views} views when one is on disk or costs no "
                             "more than computing inline"
                             if self.mode == "auto" and self.pad else "")
        self._perf, self._x, self._batch_size = perf, train_x, batch_size
        self.topk = cfg.perf.teacher_topk  # the logits bank keeps each row's top k (0: all)
        self._outputs = 0  # the teacher's logits per row (known once a top-k bank is built)
        self._say, self._dist = say, dist
        self._caches: dict[str, TeacherCache] = {}
        self._inline: set[str] = set()  # outputs the bank does not hold (said why once)

    def describe_cache(self) -> str:
        return f"teacher cache {self.mode or 'off'}" + (f" ({self._why_off})"
                                                         if self._why_off else "")

    def prepare(self, outputs: list[str], epochs: int | None = None) -> None:
        """Build (or find on disk) the bank of each of ``outputs`` (layer names or LOGITS)
        that is not there yet, when caching is on; a stage calls this when it is built, with
        the ``epochs`` it reads them for (auto weighs a bank against that many epochs of
        inline forwards)."""
        if self.mode is None:
            return
        for what in outputs:
            if what not in self._caches and what not in self._inline:
                name = what
                if what == LOGITS and self.topk:
                    self._outputs = self._check_topk()
                    name = f"{LOGITS} (top {self.topk} of {self._outputs})"  # in its key too
                cache = build_teacher_cache(
                    self._runner(what), self.net, self._x, what=name, flips=self.flips,
                    mode=self.mode, perf=self._perf, batch_size=self._batch_size, say=self._say,
                    dist=self._dist, pad=self.pad, epochs=epochs, fill=self.fill)
                if cache is None:
                    self._inline.add(what)
                else:
                    self._caches[what] = cache

    def logits(self, batch: Batch) -> torch.Tensor:
        return self._get([LOGITS], batch)[0]

    def features(self, layers: list[str], batch: Batch) -> list[torch.Tensor]:
        """The outputs of ``layers`` for ``batch`` (the forward pass stops at the deepest)."""
        return self._get(layers, batch)

    def _get(self, whats: list[str], batch: Batch) -> list[torch.Tensor]:
        if batch.idx is not None and all(w in self._caches for w in whats):
            out = [cached(self._caches[w], batch.idx, batch.view, batch.x.device)
                   for w in whats]
            if self.topk and whats == [LOGITS]:
                out = [unpack_topk(out[0], self._outputs)]
            return out
        # no_grad, not inference_mode: the outputs enter the step's loss, which perf.compile
        # compiles whole, and a compiled backward may save them (an inference tensor
        # cannot be saved for backward: measured, MNIST hint stage under bf16)
        with torch.no_grad():
            if whats == [LOGITS]:
                return [self.net(batch.x)]
            return run_to(self.net, batch.x, whats)

    def _check_topk(self) -> int:
        """The teacher's outputs per row; a top k larger than that is refused."""
        with torch.no_grad(), self._perf.autocast():
            outputs = self.net(self._perf.layout(self._x[:1])).shape[-1]
        if self.topk > outputs:
            raise FitnetsError(f"perf.teacher_topk={self.topk} is more than the teacher's "
                               f"{outputs} outputs per row: set it to at most {outputs}, or "
                               "0 to bank every logit.")
        return outputs

    def _runner(self, what: str) -> Callable[[torch.Tensor], torch.Tensor]:
        if what == LOGITS:
            return (lambda x: pack_topk(self.net(x), self.topk)) if self.topk else self.net
        return lambda x: run_to(self.net, x, [what])[0]


def cached(cache: TeacherCache, idx: torch.Tensor, view: torch.Tensor | None,
           device: torch.device | None = None) -> torch.Tensor:
    """The banked outputs of training rows ``idx`` in the views ``view`` (augmentation's
    ``view_index``; a flip mask with flips only; None: not augmented), on ``device``
    (default: ``idx``'s)."""
    rows = _move(idx, cache.store.device)
    if view is not None:
        if cache.views == 1:
            raise FitnetsError("the teacher cache holds the images as they are but the batch "
                               "was augmented; rebuild it with the run's data.augment_pad "
                               "and augment_flip.")
        v = _move(view, rows.device).long()
        rows = rows + cache.n * (v if cache.flips else v // 2)
    return cache.store[rows].to(device or idx.device, non_blocking=True)


def _move(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``: without waiting for the GPU's stream, except from a GPU to the
    host, where the rows must have arrived before the host gathers with them. The loop's
    rows and flips are drawn on the host (data/memory.py), so a disk cache read for a GPU
    batch makes no such copy."""
    return t.to(device, non_blocking=not (t.is_cuda and device.type == "cpu"))
