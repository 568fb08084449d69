"""MNIST from the canonical IDX files, uncompressed or gzip-compressed."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from fitnets.data.download import fetch, missing_files_error
from fitnets.data.source import Images
from fitnets.errors import FitnetsError

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FILES = {  # base name -> md5 of the .gz the mirrors serve
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
CLASSES = [str(d) for d in range(10)]


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes with ``ndim`` dimensions (gzip when ``.gz``)."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise FitnetsError(f"Cannot read MNIST file {path}: {e}. Delete it and "
                           "download or copy it again.") from e
    header = 4 + 4 * ndim
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if magic != 0x0800 | ndim:
        raise FitnetsError(f"{path} is not an IDX file of {ndim}-D unsigned bytes (magic "
                           f"number {magic:#x}, expected {0x800 | ndim:#x}). Replace it "
                           "with the genuine MNIST file.")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) != header + int(np.prod(dims)):
        raise FitnetsError(f"{path} is truncated or padded: {len(raw)} bytes for shape "
                           f"{dims}, expected {header + int(np.prod(dims))}. Delete it "
                           "and download or copy it again.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(root: Path, base: str) -> Path | None:
    for folder in (root, root / "mnist"):
        for name in (base, base + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _locate(root: Path, download: bool) -> dict[str, Path]:
    found = {b: _find(root, b) for b in FILES}
    missing = [b for b, p in found.items() if p is None]
    if missing and not download:
        raise missing_files_error("mnist", [m + "[.gz]" for m in missing], root / "mnist",
                                  "downloading is disabled")
    for base in missing:
        dest = root / "mnist" / (base + ".gz")
        try:
            found[base] = fetch([m + base + ".gz" for m in MIRRORS], dest, md5=FILES[base])
        except FitnetsError as e:
            raise missing_files_error("mnist", [m + ".gz" for m in missing],
                                      root / "mnist", f"download failed ({e})") from e
    return found


class Mnist:
    """MNIST's four IDX files, under the data root or its mnist/ folder: a ``Source``."""

    OPTIONS = ()
    paper_val = 10_000

    def __init__(self, name: str, root: Path, *, download: bool = True, path: str | None = None):
        self.name, self.root, self.download = name, root, download
        self._found: dict[str, Path] | None = None

    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def classes(self) -> list[str]:
        return list(CLASSES)

    def arrays(self, split: str) -> Images:
        """x as (N, 1, 28, 28) uint8."""
        if self._found is None:
            self._found = _locate(self.root, self.download)
        prefix = "t10k" if split == "test" else "train"
        x = read_idx(self._found[f"{prefix}-images-idx3-ubyte"], 3)
        y = read_idx(self._found[f"{prefix}-labels-idx1-ubyte"], 1)
        if len(x) != len(y):
            raise FitnetsError(f"MNIST {split} images and labels disagree in count "
                               f"({len(x)} vs {len(y)}) in {self.root}. Replace the files.")
        return Images(x[:, None], y.astype(np.int64))

    def files(self, split: str) -> None:
        return None

    def cache_key(self) -> None:
        return None
