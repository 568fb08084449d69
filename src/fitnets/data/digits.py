"""scikit-learn's 8x8 digits (1,797 images, shipped with it: no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fitnets.data.source import Images
from fitnets.errors import FitnetsError

SEED = 0  # the fixed shuffle before the 20% test split


class Digits:
    """The digits scaled 0..16 -> 0..255, shuffled with SEED, the first 20% the test split:
    a ``Source``."""

    OPTIONS = ()
    paper_val = None

    def __init__(self, name: str, root: Path, *, download: bool = True, path: str | None = None):
        self.name = name
        self._splits: dict[str, Images] | None = None

    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def classes(self) -> list[str]:
        return [str(i) for i in range(10)]

    def arrays(self, split: str) -> Images:
        if self._splits is None:
            self._splits = _read()
        return self._splits[split]

    def files(self, split: str) -> None:
        return None

    def cache_key(self) -> None:
        return None


def _read() -> dict[str, Images]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise FitnetsError("The 'digits' dataset needs scikit-learn: "
                           "pip install 'fitnets[demo]'.") from e
    d = load_digits()
    x = np.rint(d.images * 255.0 / 16.0).astype(np.uint8)[:, None]
    perm = np.random.default_rng(SEED).permutation(len(x))
    x, y = x[perm], d.target[perm].astype(np.int64)
    n_test = int(round(0.2 * len(x)))
    return {"train": Images(x[n_test:], y[n_test:]), "test": Images(x[:n_test], y[:n_test])}
