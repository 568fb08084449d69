"""MNIST IDX reader: raw and gzip files written here, corruption, downloads, real data."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fitnets.data import load_dataset, mnist
from fitnets.errors import FitnetsError


def idx_bytes(a: np.ndarray) -> bytes:
    header = (0x0800 | a.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return header + a.astype(np.uint8).tobytes()


def make_mnist(rng, n_train=50, n_test=20):
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_mnist(folder: Path, arrays: dict, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        data = idx_bytes(a)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("sub", ["", "mnist"])
def test_reads_raw_and_gz_in_root_or_subfolder(tmp_path, gz, sub):
    arrays = make_mnist(np.random.default_rng(0))
    write_mnist(tmp_path / sub, arrays, gz)
    ds = load_dataset("mnist", tmp_path, val_size=10, download=False)
    assert ds.train.x.dtype == torch.uint8 and ds.train.y.dtype == torch.int64
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    imgs, labels = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    # Validation = the LAST val_size training images, in file order.
    np.testing.assert_array_equal(ds.train.x[:, 0].numpy(), imgs[:40])
    np.testing.assert_array_equal(ds.val.x[:, 0].numpy(), imgs[40:])
    np.testing.assert_array_equal(ds.val.y.numpy(), labels[40:])
    np.testing.assert_array_equal(ds.test.x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])


def test_bad_magic_names_file(tmp_path):
    write_mnist(tmp_path, make_mnist(np.random.default_rng(0)), gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    raw = bytearray(p.read_bytes())
    raw[2:4] = b"\x0d\x03"  # int32 type code instead of ubyte
    p.write_bytes(bytes(raw))
    with pytest.raises(FitnetsError, match="train-images-idx3-ubyte.*magic"):
        load_dataset("mnist", tmp_path, download=False)


def test_truncated_names_file(tmp_path):
    write_mnist(tmp_path, make_mnist(np.random.default_rng(0)), gz=False)
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(FitnetsError, match="t10k-images-idx3-ubyte.*truncated"):
        load_dataset("mnist", tmp_path, download=False)


def test_corrupt_gzip_names_file(tmp_path):
    write_mnist(tmp_path, make_mnist(np.random.default_rng(0)), gz=True)
    p = tmp_path / "train-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:15])
    with pytest.raises(FitnetsError, match="train-labels-idx1-ubyte.gz"):
        load_dataset("mnist", tmp_path, download=False)


def test_missing_without_download_says_where_and_fitnets_data(tmp_path):
    with pytest.raises(FitnetsError) as e:
        load_dataset("mnist", tmp_path, download=False)
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and "FITNETS_DATA" in msg and str(tmp_path) in msg


def test_download_tries_mirrors_in_order(tmp_path, monkeypatch):
    arrays = make_mnist(np.random.default_rng(1))
    mirror = tmp_path / "mirror"
    write_mnist(mirror, arrays, gz=True)
    md5 = {n: hashlib.md5((mirror / (n + ".gz")).read_bytes()).hexdigest() for n in arrays}
    dead = (tmp_path / "nowhere").as_uri() + "/"
    monkeypatch.setattr(mnist, "MIRRORS", (dead, mirror.as_uri() + "/"))
    monkeypatch.setattr(mnist, "FILES", md5)
    root = tmp_path / "root"
    ds = load_dataset("mnist", root, val_size=0)
    assert ds.val is None
    assert sorted(os.listdir(root / "mnist")) == sorted(n + ".gz" for n in arrays)
    np.testing.assert_array_equal(ds.train.y.numpy(), arrays["train-labels-idx1-ubyte"])


def test_download_failure_lists_files_and_env(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "MIRRORS", ((tmp_path / "nowhere").as_uri() + "/",))
    with pytest.raises(FitnetsError, match="FITNETS_DATA"):
        load_dataset("mnist", tmp_path / "root")


@pytest.mark.data
def test_real_mnist_slice():
    root = os.environ.get("FITNETS_DATA")
    if not root or mnist._find(Path(root), "train-images-idx3-ubyte") is None:
        pytest.skip("real MNIST not found in $FITNETS_DATA")
    ds = load_dataset("mnist", train_limit=1000, test_limit=500, download=False)
    assert ds.train.x.shape == (1000, 1, 28, 28) and ds.val.x.shape == (10_000, 1, 28, 28)
    assert ds.test.x.shape == (500, 1, 28, 28)
    # A class-balanced subset (100 of each digit), kept in the file's order.
    assert torch.bincount(ds.train.y, minlength=10).tolist() == [100] * 10
    assert 20 < ds.train.x.float().mean() < 50  # mostly-black digits, genuine pixels
