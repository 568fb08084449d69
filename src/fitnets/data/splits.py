"""Which of a source's images a run trains, validates and tests on (``plan``), and the
uint8 tensors they are read into (``read``: a ``Dataset`` of ``Split``s).

The plan is made over row indices, by one function, for the in-memory and the streamed path
alike: the validation split is the source's own val/, else the last ``val_size`` training
images (by default the paper's last 10k for MNIST and CIFAR, 10% for others, at most 20%);
``train_limit`` / ``test_limit`` then keep a seeded, class-balanced subset of the training
rows left and of the test rows (the same for every run seed), in the source's order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

from fitnets.data.source import Images, Source
from fitnets.errors import FitnetsError

LIMIT_SEED = 0  # data.train_limit / test_limit: the same subset for every run seed
Rows = Union[range, np.ndarray]  # a range of rows, or the sorted rows of a subset


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


def held_out(source: Source, n: int, val_size: int | None) -> int:
    """How many of ``n`` training images to hold out for validation: ``val_size``, or by
    default the paper's (``source.paper_val``) or 10%, at most 20%."""
    if val_size is None:
        val_size = source.paper_val if source.paper_val is not None else int(round(0.1 * n))
        # A small copy (tests, subsets) cannot spare 10k images: hold out 20% at most.
        val_size = min(val_size, n // 5)
    if not 0 <= val_size < n:
        raise FitnetsError(f"val_size={val_size} is invalid for {source.name}: the training "
                           f"set has {n} images; use 0 <= val_size < {n}.")
    return val_size


@dataclass(frozen=True)
class Plan:
    """The rows of a source's splits that a run uses."""

    train: Rows  # of the train split
    val: range | None  # of the ``val_from`` split; None: no validation split
    test: Rows  # of the ``test_from`` split
    val_from: str = "train"  # train: held out of it; val: the source's own
    test_from: str = "test"  # val: a source without test/ is tested on its val/

    def count(self) -> int:
        """The images the run holds (a val split that is also the test split, once)."""
        test = len(self.test) if self.test_from == "test" else 0
        return len(self.train) + (len(self.val) if self.val is not None else 0) + test


def plan(source: Source, labels: dict[str, np.ndarray], *, val_size: int | None = None,
         train_limit: int = 0, test_limit: int = 0) -> Plan:
    """The plan for ``source``, whose splits (``source.splits()``) have ``labels``."""
    n = len(labels["train"])
    if "val" in labels:  # the source's own val split: nothing is held out of train
        train, val = range(n), range(len(labels["val"]))
    else:
        cut = n - held_out(source, n, val_size)
        train, val = range(cut), (range(cut, n) if cut < n else None)
    test_from = "test" if "test" in labels else "val"
    return Plan(_limit(train, labels["train"], train_limit), val,
                _limit(range(len(labels[test_from])), labels[test_from], test_limit),
                "val" if "val" in labels else "train", test_from)


def _limit(rows: range, labels: np.ndarray, n: int) -> Rows:
    """A balanced subset of ``n`` of ``rows`` (which start at 0); all when n is 0 or more."""
    if n <= 0 or n >= len(rows):
        return rows
    return balanced_subset(labels[:len(rows)], n)


def take(items, rows: Rows):
    """The ``rows`` of an array (a view for a range) or of a list."""
    if isinstance(rows, range):
        return items[rows.start:rows.stop]
    return items[rows] if isinstance(items, np.ndarray) else [items[i] for i in rows]


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


def read(source: Source, *, val_size: int | None = None, train_limit: int = 0,
         test_limit: int = 0) -> Dataset:
    """The planned rows of ``source``'s splits, read into memory."""
    arrays = {s: source.arrays(s) for s in source.splits()}
    p = plan(source, {s: a.y for s, a in arrays.items()}, val_size=val_size,
             train_limit=train_limit, test_limit=test_limit)
    val = _split(arrays[p.val_from], p.val) if p.val is not None else None
    return Dataset(source.name, _split(arrays["train"], p.train), val,
                   _split(arrays[p.test_from], p.test), [str(c) for c in source.classes()])


def _split(images: Images, rows: Rows) -> Split:
    return Split(_tensor(take(images.x, rows), np.uint8), _tensor(take(images.y, rows), np.int64))


def _tensor(a: np.ndarray, dtype) -> torch.Tensor:
    a = np.ascontiguousarray(a, dtype=dtype)
    # Buffers parsed straight from file bytes are read-only; torch wants writable memory.
    return torch.from_numpy(a if a.flags.writeable else a.copy())
