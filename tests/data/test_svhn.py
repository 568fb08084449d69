"""SVHN .mat reader on files written with scipy.io.savemat in the genuine HWCN layout."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from fitnets.data import load_dataset, svhn
from fitnets.errors import FitnetsError

# integration: scipy (.ci/run's locked run checks these under its pins)
pytestmark = pytest.mark.integration

scipy_io = pytest.importorskip("scipy.io")


def write_mat(path: Path, rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, (n, 1)).astype(np.uint8)  # 1..10, 10 meaning digit 0
    y[0] = 10
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy_io.savemat(path, {"X": x, "y": y})
    return x, y


def test_reads_hwcn_and_maps_label_10_to_0(tmp_path):
    rng = np.random.default_rng(0)
    x, y = write_mat(tmp_path / "train_32x32.mat", rng, 20)
    tx, ty = write_mat(tmp_path / "test_32x32.mat", rng, 7)
    ds = load_dataset("svhn", tmp_path, val_size=5, download=False)
    assert ds.input_shape == (3, 32, 32) and ds.classes == [str(i) for i in range(10)]
    np.testing.assert_array_equal(ds.train.x[3].numpy(), x[:, :, :, 3].transpose(2, 0, 1))
    assert ds.train.y[0] == 0 and int(ds.train.y.max()) <= 9
    np.testing.assert_array_equal(ds.val.y.numpy(), y[15:, 0] % 10)
    np.testing.assert_array_equal(ds.test.x.numpy(), tx.transpose(3, 2, 0, 1))


def test_bad_mat_names_file(tmp_path):
    write_mat(tmp_path / "train_32x32.mat", np.random.default_rng(0), 5)
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, but not really")
    with pytest.raises(FitnetsError, match="test_32x32.mat"):
        load_dataset("svhn", tmp_path, download=False)


def test_wrong_layout_names_file(tmp_path):
    write_mat(tmp_path / "train_32x32.mat", np.random.default_rng(0), 5)
    scipy_io.savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((5, 3, 32, 32), np.uint8),
                                                   "y": np.ones((5, 1), np.uint8)})
    with pytest.raises(FitnetsError, match="test_32x32.mat.*32, 32, 3, N"):
        load_dataset("svhn", tmp_path, download=False)


def test_missing_lists_files(tmp_path):
    with pytest.raises(FitnetsError, match="train_32x32.mat.*test_32x32.mat.*FITNETS_DATA"):
        load_dataset("svhn", tmp_path, download=False)


def test_download_file_urls(tmp_path, monkeypatch):
    server = tmp_path / "server"
    rng = np.random.default_rng(2)
    write_mat(server / "train_32x32.mat", rng, 10)
    write_mat(server / "test_32x32.mat", rng, 3)
    md5 = {p: hashlib.md5((server / f"{p}_32x32.mat").read_bytes()).hexdigest()
           for p in ("train", "test")}
    monkeypatch.setattr(svhn, "URL", server.as_uri() + "/{}_32x32.mat")
    monkeypatch.setattr(svhn, "MD5", md5)
    ds = load_dataset("svhn", tmp_path / "root", val_size=0)
    assert len(ds.train) == 10 and (tmp_path / "root" / "svhn" / "test_32x32.mat").is_file()


def test_second_load_hits_cache(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    write_mat(tmp_path / "train_32x32.mat", rng, 10)
    write_mat(tmp_path / "test_32x32.mat", rng, 3)
    first = load_dataset("svhn", tmp_path, val_size=0, download=False)

    def boom(path):
        raise AssertionError("decoded again instead of using the cache")
    monkeypatch.setattr(svhn, "read_mat", boom)
    second = load_dataset("svhn", tmp_path, val_size=0, download=False)
    assert (first.train.x == second.train.x).all() and (first.test.y == second.test.y).all()
    assert list((tmp_path / ".fitnets-cache").glob("svhn-*.npz"))
