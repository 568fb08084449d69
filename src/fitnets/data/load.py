"""``load_dataset``: one entry point for every supported dataset, returning uint8 tensors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from fitnets.data import cifar, folder, mnist, svhn
from fitnets.data.cache import cached
from fitnets.data.dataset import Dataset, Split
from fitnets.errors import FitnetsError

DATASETS: tuple[str, ...] = ("mnist", "digits", "cifar10", "cifar100", "svhn", "folder")
CIFAR10_ZIP = "cifar10-jpeg.zip"
_OPTIONS = {  # valid **options per dataset
    "mnist": (), "digits": (), "cifar10": (), "cifar100": ("labels",),
    "svhn": ("extra",), "folder": ("size", "mode", "resize", "image_size", "skip_bad"),
}
_PAPER_VAL = {"mnist": 10_000, "cifar10": 10_000, "cifar100": 10_000}
DIGITS_SEED = 0


def data_root() -> Path:
    """``$FITNETS_DATA`` if set, else ``~/.cache/fitnets``."""
    env = os.environ.get("FITNETS_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fitnets"


def _digits() -> dict[str, np.ndarray]:
    """scikit-learn's 8x8 digits, scaled 0..16 -> 0..255, fixed-seed shuffle, 20% test."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise FitnetsError("The 'digits' dataset needs scikit-learn: "
                           "pip install 'fitnets[demo]'.") from e
    d = load_digits()
    x = np.rint(d.images * 255.0 / 16.0).astype(np.uint8)[:, None]
    perm = np.random.default_rng(DIGITS_SEED).permutation(len(x))
    x, y = x[perm], d.target[perm].astype(np.int64)
    n_test = int(round(0.2 * len(x)))
    return {"train_x": x[n_test:], "train_y": y[n_test:], "test_x": x[:n_test],
            "test_y": y[:n_test], "classes": np.array([str(i) for i in range(10)])}


def image_source(name: str, root: Path, path: str | None) -> Path | None:
    """The folder or zip an image dataset is read from: CIFAR-10's JPEG zip when its pickles
    are absent, a folder dataset's path (a relative one may also be relative to the data
    root); None for datasets read otherwise."""
    if name == "cifar10":
        zipped = root / CIFAR10_ZIP
        return zipped if not cifar.has_pickles(root, name) and zipped.is_file() else None
    if name != "folder" or path is None:
        return None
    p = Path(path).expanduser()
    return root / p if not p.exists() and not p.is_absolute() and (root / p).exists() else p


def _folder(root: Path, path: str | None, name: str, **opts) -> dict[str, np.ndarray]:
    if path is None:
        raise FitnetsError("Dataset 'folder' needs path= a folder or .zip laid out as "
                           "train/<class>/* and test/<class>/*.")
    p = image_source("folder", root, path)
    if not p.exists():
        raise FitnetsError(f"Image folder path {p} does not exist. Pass path= an existing "
                           "folder or .zip with train/<class>/ and test/<class>/ inside.")
    key = {"size": opts.get("size"), "mode": opts.get("mode", "RGB"),
           "resize": opts.get("resize", False), "image_size": opts.get("image_size"),
           "skip_bad": opts.get("skip_bad", False)}
    return cached(root, name, folder.source_files(p), key,
                  lambda: folder.decode_folder(p, **opts))


def _read(name: str, root: Path, download: bool, path: str | None, opts: dict) -> dict:
    if name == "mnist":
        return mnist.read_mnist(root, download)
    if name == "digits":
        return _digits()
    if name == "cifar100":
        return cifar.read_cifar(root, name, download, **opts)
    if name == "cifar10":
        zipped = image_source(name, root, path)
        if zipped is not None:
            return _folder(root, str(zipped), "cifar10-jpeg", size=(32, 32), mode="RGB")
        return cifar.read_cifar(root, name, download)
    if name == "svhn":
        files = svhn.svhn_files(root, bool(opts.get("extra", False)))
        svhn.ensure_svhn(files, root, download)
        return cached(root, "svhn", list(files.values()), {},
                      lambda: svhn.decode_svhn(files))
    return _folder(root, path, "folder", **opts)


def _check_args(name: str, opts: dict) -> None:
    if name not in DATASETS:
        raise FitnetsError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    bad = sorted(set(opts) - set(_OPTIONS[name]))
    if bad:
        valid = ", ".join(_OPTIONS[name]) or "none"
        raise FitnetsError(f"Unknown option(s) {', '.join(bad)} for dataset {name!r}; "
                           f"valid options: {valid}.")


def _tensor(a: np.ndarray, dtype) -> torch.Tensor:
    a = np.ascontiguousarray(a, dtype=dtype)
    # Buffers parsed straight from file bytes are read-only; torch wants writable memory.
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _split(x: np.ndarray, y: np.ndarray) -> Split:
    return Split(_tensor(x, np.uint8), _tensor(y, np.int64))


def resolve_val_size(name: str, n: int, val_size: int | None) -> int:
    """How many of ``n`` training images to hold out for validation: ``val_size``, or by
    default the paper's last 10k (MNIST, CIFAR) or 10% (others), at most 20%."""
    if val_size is None:
        val_size = _PAPER_VAL.get(name, int(round(0.1 * n)))
        # A small copy (tests, subsets) cannot spare 10k images: hold out 20% at most.
        val_size = min(val_size, n // 5)
    if not 0 <= val_size < n:
        raise FitnetsError(f"val_size={val_size} is invalid for {name}: the training set has "
                           f"{n} images; use 0 <= val_size < {n}.")
    return val_size


def load_dataset(
    name: str, root: str | os.PathLike | None = None, *, val_size: int | None = None,
    train_limit: int = 0, test_limit: int = 0, download: bool = True,
    path: str | None = None, **options,
) -> Dataset:
    """Load a dataset as uint8 (N, C, H, W) tensors with int64 labels.

    ``val_size=None`` holds out the paper's last 10k training images (MNIST, CIFAR) or 10%
    (others); 0 means no validation split. ``train_limit``/``test_limit`` > 0 keep a seeded,
    class-balanced subset of that many (``Split.limit``; the same for every run seed) of the
    first N images, applied after the validation split.
    """
    _check_args(name, options)
    root = Path(root).expanduser() if root is not None else data_root()
    a = _read(name, root, download, path, options)
    n = len(a["train_y"])
    if "val_x" in a:  # the folder has its own val/ split: nothing is held out of train/
        train = _split(a["train_x"], a["train_y"]).limit(train_limit)
        val = _split(a["val_x"], a["val_y"])
        test = _split(a["test_x"], a["test_y"]).limit(test_limit)
        return Dataset(name, train, val, test, [str(c) for c in a["classes"]])
    cut = n - resolve_val_size(name, n, val_size)
    train = _split(a["train_x"][:cut], a["train_y"][:cut]).limit(train_limit)
    val = _split(a["train_x"][cut:], a["train_y"][cut:]) if cut < n else None
    test = _split(a["test_x"], a["test_y"]).limit(test_limit)
    return Dataset(name, train, val, test, [str(c) for c in a["classes"]])
