"""In-memory dataset containers: uint8 images plus int64 labels, nothing model-specific."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

LIMIT_SEED = 0  # data.train_limit / test_limit: the same subset for every run seed


def balanced_subset(labels: np.ndarray, n: int, seed: int = LIMIT_SEED) -> np.ndarray:
    """Indices of ``n`` examples, as many of each class as possible (the remainder going to
    classes in a seeded order, a class with too few giving its share to the others), chosen
    within each class by a seeded permutation; returned in their original order."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))
    pools = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    take = dict.fromkeys(classes, 0)
    left = min(n, len(labels))
    while left:
        open_ = [c for c in classes if take[c] < len(pools[c])]
        share = max(left // len(open_), 1)
        for c in open_:
            step = min(share, len(pools[c]) - take[c], left)
            take[c] += step
            left -= step
            if not left:
                break
    return np.sort(np.concatenate([pools[c][:take[c]] for c in classes]))


@dataclass
class Split:
    """One split of a dataset: ``x`` uint8 (N, C, H, W), ``y`` int64 (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        """Return a copy of this split on ``device`` (no copy when already there)."""
        return Split(self.x.to(device), self.y.to(device))

    def limit(self, n: int, seed: int = 0) -> Split:
        """A class-balanced subset of ``n`` examples (all when ``n`` is 0 or too large);
        see ``balanced_subset``."""
        if n <= 0 or n >= len(self):
            return self
        keep = torch.from_numpy(balanced_subset(self.y.numpy(), n, seed))
        return Split(self.x[keep], self.y[keep])

    def head(self, n: int) -> Split:
        """The first ``n`` examples (all of them when ``n`` is 0 or larger than the split)."""
        if n <= 0 or n >= len(self):
            return self
        return Split(self.x[:n], self.y[:n])


@dataclass
class Dataset:
    """A named dataset with train / optional validation / test splits and class names."""

    name: str
    train: Split
    val: Split | None
    test: Split
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)
