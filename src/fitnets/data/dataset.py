"""In-memory dataset containers: uint8 images plus int64 labels, nothing model-specific."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
