"""scikit-learn's 8x8 digits (1,797 images, shipped with it: no download)."""

from __future__ import annotations

import importlib.util
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


def _shipped() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images (1797, 8, 8) of 0..16 and int64 labels, as
    ``load_digits`` gives them. Read from the file scikit-learn ships them in
    (datasets/data/digits.csv.gz: 64 pixel columns, then the label), found without
    importing scikit-learn, whose sklearn.datasets import cost every `fitnets` command on
    digits about a second; ``load_digits`` where that file is not there."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise FitnetsError("The 'digits' dataset needs scikit-learn: "
                           "pip install 'fitnets[demo]'.")
    for folder in spec.submodule_search_locations or ():
        csv = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            rows = np.loadtxt(csv, delimiter=",")
            return rows[:, :-1].reshape(-1, 8, 8), rows[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target.astype(np.int64)


def _read() -> dict[str, Images]:
    images, labels = _shipped()
    x = np.rint(images * 255.0 / 16.0).astype(np.uint8)[:, None]
    perm = np.random.default_rng(SEED).permutation(len(x))
    x, y = x[perm], labels[perm]
    n_test = int(round(0.2 * len(x)))
    return {"train": Images(x[n_test:], y[n_test:]), "test": Images(x[:n_test], y[:n_test])}
