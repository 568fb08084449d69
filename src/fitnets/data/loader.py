"""Mini-batches as slices of in-memory tensors (no worker processes needed)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from fitnets.data.dataset import Split
from fitnets.errors import FitnetsError


def batches(split: Split, batch_size: int, *, shuffle: bool,
            generator: torch.Generator | None = None,
            drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (x, y) batches covering every example once per pass.

    With ``shuffle`` the order is ``torch.randperm`` drawn from ``generator`` (on the
    generator's device, then moved to the data's), so a seeded generator repeats epochs.
    """
    if batch_size <= 0:
        raise FitnetsError(f"batch_size must be a positive integer, got {batch_size}.")
    n = len(split)
    order = None
    if shuffle:
        dev = generator.device if generator is not None else split.x.device
        order = torch.randperm(n, generator=generator, device=dev).to(split.x.device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            yield split.x[start:start + batch_size], split.y[start:start + batch_size]
        else:
            idx = order[start:start + batch_size]
            yield split.x[idx], split.y[idx.to(split.y.device)]
