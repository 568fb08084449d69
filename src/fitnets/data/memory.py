"""Data that fits in memory: whole splits as tensors on the training device, and the
batches the training loop consumes.

Augmentation works on whole batches on the device (airbench's habit). The loop sees only
``Batch``es: the images, their labels, their rows in the training split and the view each
was shown in (offsets and flip), which is all the teacher bank needs to look its outputs up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from fitnets.data.augment import alternating_flips, mirror

# (x, generator) -> (augmented x, each image's view or None: data/augment.py view_index)
AugmentFn = Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class Arrays:
    """A split already on the training device: float inputs (preprocessed) and labels."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Batch:
    """What one step trains on. ``idx``: the rows of the training split (None for
    evaluation batches); ``view``: the view augmentation showed each image in, its offsets
    and flip as one integer (``fitnets.data.augment.view_index``; None: not augmented).
    Both stay where the run's generator drew them (the host), so that a teacher bank on
    the host reads its rows without waiting for the GPU."""

    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor | None = None
    view: torch.Tensor | None = None
    share: float | None = None  # already this rank's share of a global batch (streaming)
    size: int | None = None  # then: the global batch's size

    def __len__(self) -> int:
        return len(self.y)

    @property
    def flipped(self) -> torch.Tensor | None:
        """Which images were mirrored (the view's lowest bit); None: not augmented."""
        return None if self.view is None else (self.view % 2).bool()


@dataclass
class Data:
    """Every split in memory, on the training device: fitnets.data.training.TrainingData."""

    workers = 0  # no loader processes
    skipped = 0  # every image was decoded before training
    unit = ("img", 1)  # a row is one image (training.TrainingData.unit)

    train: Arrays
    val: Arrays | None
    test: Arrays
    batch_size: int
    eval_batch_size: int
    augment: AugmentFn | None = None
    alternate_flips: bool = False  # data.augment_flip=alternate: mirror by row and epoch

    def loader_advice(self) -> None:
        """Nothing to advise (training.TrainingData.loader_advice): the batches are cut from
        memory the same way whatever the settings."""
        return None

    def train_batches(self, generator: torch.Generator, start: int = 0,
                      epoch: int = 1) -> Iterator[Batch]:
        """One epoch (``epoch``, 1-based) of shuffled, augmented training batches, drawn from
        ``generator``, from batch ``start`` on (the earlier ones' augmentation is drawn and
        dropped, so the generator is where an uninterrupted epoch would have it)."""
        x = self.train.x
        for k, idx in enumerate(order(len(self.train), self.batch_size, generator)):
            # non_blocking: a blocking copy to a GPU waits for the stream to drain (a host
            # sync every step); from pageable memory the copy is staged before it returns
            rows = idx.to(x.device, non_blocking=True)
            batch = Batch(x[rows], self.train.y[rows], idx)
            if self.augment is not None:
                batch.x, batch.view = self.augment(batch.x, generator)
            if self.alternate_flips:
                flipped = alternating_flips(idx, epoch)
                batch.x = mirror(batch.x, flipped)  # after the crop, as view_index counts
                batch.view = (flipped.long() if batch.view is None
                              else batch.view ^ flipped.long())
            if k >= start:
                yield batch

    def probe(self, n: int = 2) -> torch.Tensor:
        """A few training inputs (to trace shapes and parameters)."""
        return self.train.x[:n]

    def train_inputs(self) -> torch.Tensor:
        return self.train.x

    def eval_batches(self, arrays: Arrays, rows: tuple[int, int] | None = None,
                     ) -> Iterator[Batch]:
        """Rows ``[lo, hi)`` of ``arrays`` (all of them by default), in order."""
        lo, hi = rows or (0, len(arrays))
        for i in range(lo, hi, self.eval_batch_size):
            j = min(i + self.eval_batch_size, hi)
            yield Batch(arrays.x[i:j], arrays.y[i:j])

    def map_x(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Replace every split's inputs by ``fn(inputs)`` (e.g. a memory layout)."""
        for arrays in (self.train, self.val, self.test):
            if arrays is not None:
                arrays.x = fn(arrays.x)


def rank_rows(n: int, rank: int, world: int) -> tuple[int, int]:
    """Process ``rank``'s contiguous share [lo, hi) of ``n`` rows among ``world`` processes;
    shares differ by at most one row."""
    return rank * n // world, (rank + 1) * n // world


def order(n: int, batch_size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """A seeded permutation of ``range(n)`` in slices of ``batch_size``, drawn on the
    generator's device."""
    dev = generator.device if generator is not None else None
    perm = torch.randperm(n, generator=generator, device=dev)
    for i in range(0, n, batch_size):
        yield perm[i:i + batch_size]
