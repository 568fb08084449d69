"""The dataset sources by name, and ``load_dataset``: one entry point for every supported
dataset, returning uint8 tensors."""

from __future__ import annotations

import os
from pathlib import Path

from fitnets.data.cifar import Cifar
from fitnets.data.digits import Digits
from fitnets.data.folder import Folder
from fitnets.data.mnist import Mnist
from fitnets.data.source import Source
from fitnets.data.splits import Dataset, read
from fitnets.data.svhn import Svhn
from fitnets.data.text import Text
from fitnets.errors import FitnetsError
from fitnets.names import DATASETS

SOURCE_CLASSES: dict[str, type] = {  # one for each of names.DATASETS
    "mnist": Mnist, "digits": Digits, "cifar10": Cifar, "cifar100": Cifar, "svhn": Svhn,
    "folder": Folder, "text": Text,
}


def data_root() -> Path:
    """``$FITNETS_DATA`` if set, else ``~/.cache/fitnets``."""
    env = os.environ.get("FITNETS_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fitnets"


def source_options(name: str) -> tuple[str, ...]:
    """The options dataset ``name``'s source takes (an unknown name is refused)."""
    if name not in SOURCE_CLASSES:
        raise FitnetsError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    return SOURCE_CLASSES[name].OPTIONS


def open_source(name: str, root: str | os.PathLike | None = None, *, download: bool = True,
                path: str | None = None, **opts) -> Source:
    """The source of dataset ``name`` under ``root`` (default ``data_root()``); ``path``: an
    image folder's; ``opts``: those of ``source_options(name)`` to set. Nothing is read yet."""
    bad = sorted(set(opts) - set(source_options(name)))
    if bad:
        valid = ", ".join(source_options(name)) or "none"
        raise FitnetsError(f"Unknown option(s) {', '.join(bad)} for dataset {name!r}; "
                           f"valid options: {valid}.")
    root = Path(root).expanduser() if root is not None else data_root()
    return SOURCE_CLASSES[name](name, root, download=download, path=path, **opts)


def load_dataset(
    name: str, root: str | os.PathLike | None = None, *, val_size: int | None = None,
    train_limit: int = 0, test_limit: int = 0, download: bool = True,
    path: str | None = None, **options,
) -> Dataset:
    """Load a dataset as uint8 (N, C, H, W) tensors with int64 labels.

    ``val_size=None`` holds out the paper's last 10k training images (MNIST, CIFAR) or 10%
    (others); 0 means no validation split. ``train_limit``/``test_limit`` > 0 keep a seeded,
    class-balanced subset of that many of the first N images, applied after the validation
    split (fitnets.data.splits).
    """
    source = open_source(name, root, download=download, path=path, **options)
    return read(source, val_size=val_size, train_limit=train_limit, test_limit=test_limit)
