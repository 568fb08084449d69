"""What every dataset format gives the rest of the data package: a ``Source``.

One class per format (fitnets.data.mnist, digits, cifar, svhn, folder), registered by the
names in fitnets.names in fitnets.data.load. A source knows its class names, reads a split as
uint8 arrays, lists a split's image files where there are such files (so that they can be
streamed), and names the cache entry its decoded arrays are kept under. Which variant of a
format it reads (CIFAR-10's pickles or its JPEG zip) is its own business. Constructing one
checks only what is cheap to check; files are read (or downloaded) when first asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from fitnets.data.images import FileRef

SPLITS = ("train", "val", "test")


class Images(NamedTuple):
    """One split as read: uint8 images (N, C, H, W) and int64 labels (N,)."""

    x: np.ndarray
    y: np.ndarray


@dataclass
class Decoded:
    """Every split of a source, as read, and its class names: what the cache keeps."""

    splits: dict[str, Images]
    classes: list[str]


class Source(Protocol):
    """One dataset in one format."""

    name: str
    """The dataset's name (data.name), as messages and the validation default know it."""
    paper_val: int | None
    """Training images the paper held out for validation; None: 10% (see splits.held_out)."""

    def splits(self) -> tuple[str, ...]:
        """Its own splits, in SPLITS order: train, and test and/or val (a source without
        test/ is tested on its val split; one without val/ has one held out of train)."""
        ...

    def classes(self) -> list[str]:
        """The class names, in label order."""
        ...

    def arrays(self, split: str) -> Images:
        """One of its splits, read (or decoded) into memory."""
        ...

    def files(self, split: str) -> list[FileRef] | None:
        """One of its splits as image files, to be streamed; None where its images are not
        files of their own (then it is read into memory)."""
        ...

    def cache_key(self) -> str | None:
        """The name of the cache entry its decoded arrays are kept under (fitnets.data.cache);
        None where they are read from their files every time."""
        ...
