"""SVHN cropped digits from the genuine MATLAB files (``train|test_32x32.mat``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fitnets.data import cache
from fitnets.data.download import download_file, missing_files_error
from fitnets.data.source import Decoded, Images
from fitnets.errors import FitnetsError

URL = "http://ufldl.stanford.edu/housenumbers/{}_32x32.mat"
MD5 = {
    "train": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test": "eb5a983be6a315427106f1b69d4e8a2e",
}
CLASSES = [str(d) for d in range(10)]


def svhn_files(root: Path) -> dict[str, Path]:
    """Where the .mat files are (``root`` or ``root/svhn``), or where a download puts them."""
    return {p: _find(root, f"{p}_32x32.mat") for p in ("train", "test")}


def _find(root: Path, name: str) -> Path:
    for folder in (root, root / "svhn"):
        if (folder / name).is_file():
            return folder / name
    return root / "svhn" / name  # where a download goes


def ensure_svhn(files: dict[str, Path], root: Path, download: bool) -> None:
    """Download the missing .mat files, or explain where to place them."""
    missing = [p for p, path in files.items() if not path.is_file()]
    if missing and not download:
        raise missing_files_error("svhn", [f"{p}_32x32.mat" for p in missing], root / "svhn",
                                  "downloading is disabled")
    for part in missing:
        try:
            download_file(URL.format(part), files[part], md5=MD5[part])
        except FitnetsError as e:
            raise missing_files_error("svhn", [f"{p}_32x32.mat" for p in missing],
                                      root / "svhn", f"download failed ({e})") from e


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """X (H,W,C,N) -> (N,C,H,W) uint8; y with label 10 meaning digit 0 -> 0..9."""
    import scipy.io  # lazy: scipy is only needed for SVHN

    try:
        mat = scipy.io.loadmat(path)
        x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    except Exception as e:  # loadmat raises many types on a damaged file
        raise FitnetsError(f"Cannot read SVHN file {path}: {e}. It is corrupt or not a "
                           "SVHN *_32x32.mat file; delete it and download it again.") from e
    if x.ndim != 4 or x.shape[2] not in (1, 3) or x.shape[3] != len(y):
        raise FitnetsError(f"SVHN file {path} has X of shape {x.shape} and {len(y)} labels; "
                           "expected X as (32, 32, 3, N). Replace it with the genuine file.")
    x = np.ascontiguousarray(x.transpose(3, 2, 0, 1), dtype=np.uint8)
    return x, (y.astype(np.int64) % 10)


class Svhn:
    """SVHN's train and test .mat files, downloaded when missing, decoded once into the
    cache: a ``Source``."""

    OPTIONS = ()
    paper_val = None

    def __init__(self, name: str, root: Path, *, download: bool = True, path: str | None = None):
        self.name, self.root, self.download = name, root, download
        self._files = svhn_files(root)
        self._decoded: Decoded | None = None

    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def classes(self) -> list[str]:
        return list(CLASSES)

    def arrays(self, split: str) -> Images:
        if self._decoded is None:
            self._decoded = cache.cached(self.root, self.cache_key(), self._decode)
        return self._decoded.splits[split]

    def files(self, split: str) -> None:
        return None

    def cache_key(self) -> str:
        """Its entry's name (the files are downloaded first when missing)."""
        ensure_svhn(self._files, self.root, self.download)
        return cache.entry("svhn", list(self._files.values()), {})

    def _decode(self) -> Decoded:
        splits = {p: Images(*read_mat(f)) for p, f in self._files.items()}
        return Decoded(splits, list(CLASSES))
