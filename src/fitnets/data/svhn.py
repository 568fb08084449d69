"""SVHN cropped digits from the genuine MATLAB files (``*_32x32.mat``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fitnets.data.download import download_file, missing_files_error
from fitnets.errors import FitnetsError

URL = "http://ufldl.stanford.edu/housenumbers/{}_32x32.mat"
MD5 = {
    "train": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test": "eb5a983be6a315427106f1b69d4e8a2e",
    "extra": "a93ce644f1a588dc4d68dda5feec44a7",
}
CLASSES = [str(d) for d in range(10)]


def svhn_files(root: Path, extra: bool) -> dict[str, Path]:
    """Paths of the .mat files needed (``root`` or ``root/svhn``), downloading if allowed."""
    parts = ["train", "test"] + (["extra"] if extra else [])
    return {p: _find(root, f"{p}_32x32.mat") for p in parts}


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


def decode_svhn(files: dict[str, Path]) -> dict[str, np.ndarray]:
    """Arrays train_x/train_y/test_x/test_y; ``extra`` is appended to train when present."""
    train = [read_mat(files["train"])] + ([read_mat(files["extra"])] if "extra" in files else [])
    test_x, test_y = read_mat(files["test"])
    return {"train_x": np.concatenate([t[0] for t in train]),
            "train_y": np.concatenate([t[1] for t in train]),
            "test_x": test_x, "test_y": test_y, "classes": np.array(CLASSES)}
