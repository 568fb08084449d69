"""CIFAR-10/100 pickle readers on tar.gz archives and folders written here."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from conftest import cifar10_members, pickled
from fitnets.data import cifar, load_dataset
from fitnets.errors import FitnetsError


def cifar100_members(rng, n_train=30, n_test=10) -> dict[str, bytes]:
    def part(n):
        return pickled({b"fine_labels": rng.integers(0, 100, n).tolist(),
                        b"coarse_labels": rng.integers(0, 20, n).tolist(),
                        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)})
    return {"train": part(n_train), "test": part(n_test), "meta": pickled({
        b"fine_label_names": [f"f{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"k{i}".encode() for i in range(20)]})}


def write_tar(path: Path, folder: str, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def batch(members, name):
    return pickle.loads(members[name], encoding="bytes")


def test_cifar10_from_tar_gz(tmp_path):
    m = cifar10_members(np.random.default_rng(0))
    write_tar(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", m)
    ds = load_dataset("cifar10", tmp_path, val_size=4, download=False)
    assert ds.input_shape == (3, 32, 32) and ds.classes == [f"c{i}" for i in range(10)]
    assert len(ds.train) == 26 and len(ds.val) == 4 and len(ds.test) == 5
    first = batch(m, "data_batch_1")
    # Rows are 1024 R, then G, then B values of a 32x32 image.
    np.testing.assert_array_equal(ds.train.x[0].numpy(), first[b"data"][0].reshape(3, 32, 32))
    np.testing.assert_array_equal(ds.train.y[:6].numpy(), first[b"labels"])
    last = batch(m, "data_batch_5")
    np.testing.assert_array_equal(ds.val.y.numpy(), last[b"labels"][-4:])
    np.testing.assert_array_equal(ds.test.y.numpy(), batch(m, "test_batch")[b"labels"])


def test_cifar10_from_extracted_folder(tmp_path):
    m = cifar10_members(np.random.default_rng(1))
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, data in m.items():
        (folder / name).write_bytes(data)
    ds = load_dataset("cifar10", tmp_path, val_size=0, download=False)
    assert ds.val is None and len(ds.train) == 30


def test_cifar100_fine_labels(tmp_path):
    m = cifar100_members(np.random.default_rng(2))
    write_tar(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", m)
    ds = load_dataset("cifar100", tmp_path, val_size=5, download=False)
    assert ds.num_classes == 100 and ds.classes[:2] == ["f0", "f1"]
    np.testing.assert_array_equal(ds.test.y.numpy(), batch(m, "test")[b"fine_labels"])


def test_garbage_pickle_names_member(tmp_path):
    m = cifar10_members(np.random.default_rng(0))
    m["data_batch_3"] = b"this is not a pickle"
    write_tar(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", m)
    with pytest.raises(FitnetsError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path, download=False)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_refused(tmp_path, monkeypatch):
    m = cifar10_members(np.random.default_rng(0))
    m["test_batch"] = pickled({b"data": _Evil()})
    calls = []
    monkeypatch.setattr(os, "system", lambda cmd: calls.append(cmd))
    write_tar(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", m)
    with pytest.raises(FitnetsError, match="test_batch.*forbidden"):
        load_dataset("cifar10", tmp_path, download=False)
    assert calls == []


def test_corrupt_archive_names_file(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b garbage" * 10)
    with pytest.raises(FitnetsError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", tmp_path, download=False)


def test_missing_member_names_archive(tmp_path):
    m = cifar10_members(np.random.default_rng(0))
    del m["data_batch_2"]
    write_tar(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", m)
    with pytest.raises(FitnetsError, match="data_batch_2"):
        load_dataset("cifar10", tmp_path, download=False)


def test_missing_without_download(tmp_path):
    with pytest.raises(FitnetsError, match="cifar-100-python.tar.gz.*FITNETS_DATA"):
        load_dataset("cifar100", tmp_path, download=False)


def test_download_with_checksum(tmp_path, monkeypatch):
    src = tmp_path / "server" / "cifar-10-python.tar.gz"
    src.parent.mkdir()
    write_tar(src, "cifar-10-batches-py", cifar10_members(np.random.default_rng(3)))
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    spec = list(cifar.SOURCES["cifar10"])
    spec[2], spec[3] = src.as_uri(), md5
    monkeypatch.setitem(cifar.SOURCES, "cifar10", tuple(spec))
    ds = load_dataset("cifar10", tmp_path / "root", val_size=0)
    assert len(ds.train) == 30 and (tmp_path / "root" / "cifar-10-python.tar.gz").is_file()
    spec[3] = "0" * 32  # wrong checksum: nothing is left behind, and the error says so
    monkeypatch.setitem(cifar.SOURCES, "cifar10", tuple(spec))
    with pytest.raises(FitnetsError, match="expected md5 0{32}"):
        load_dataset("cifar10", tmp_path / "root2")
    assert list((tmp_path / "root2").iterdir()) == []
