"""load_dataset's common behaviour: names, options, validation split, limits, digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fitnets.data import DATASETS, Dataset, Split, data_root, load_dataset
from fitnets.errors import FitnetsError


def test_datasets_tuple_and_one_source_each():
    from fitnets.data.load import SOURCE_CLASSES

    assert DATASETS == ("mnist", "digits", "cifar10", "cifar100", "svhn", "folder", "text")
    assert tuple(SOURCE_CLASSES) == DATASETS


def test_unknown_dataset_lists_choices():
    with pytest.raises(FitnetsError, match="imagenet.*mnist, digits, cifar10"):
        load_dataset("imagenet")


def test_unknown_option():
    with pytest.raises(FitnetsError, match="labels.*digits.*none"):
        load_dataset("digits", labels="fine")


def test_data_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FITNETS_DATA", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.delenv("FITNETS_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert data_root() == tmp_path / "h" / ".cache" / "fitnets"


def test_digits_scaling_split_and_determinism():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits
    ds = load_dataset("digits")
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    n = len(load_digits().images)
    assert len(ds.test) == round(0.2 * n)
    assert len(ds.val) == round(0.1 * (n - len(ds.test)))  # 10% default for non-paper sets
    assert len(ds.train) + len(ds.val) + len(ds.test) == n
    assert int(ds.train.x.max()) == 255 and ds.train.x.dtype == torch.uint8
    vals = set(np.unique(ds.train.x.numpy()).tolist())
    assert vals <= {round(v * 255 / 16) for v in range(17)}
    again = load_dataset("digits")
    assert torch.equal(ds.train.x, again.train.x) and torch.equal(ds.test.y, again.test.y)


@pytest.mark.integration  # scikit-learn: where its file is, under the locked pins too
def test_digits_read_from_sklearns_file_equal_load_digits(monkeypatch):
    """fitnets reads the digits from the file scikit-learn ships (without importing
    sklearn.datasets): the same images and labels as load_digits, and load_digits itself
    where the file is not found."""
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    from fitnets.data import digits

    d = load_digits()
    images, labels = digits._shipped()
    assert np.array_equal(images, d.images) and np.array_equal(labels, d.target)
    assert images.shape == (1797, 8, 8) and labels.dtype == np.int64
    spec = digits.importlib.util.find_spec("sklearn")
    monkeypatch.setattr(spec, "submodule_search_locations", [])
    monkeypatch.setattr(digits.importlib.util, "find_spec", lambda name: spec)
    images, labels = digits._shipped()  # no file: load_digits
    assert np.array_equal(images, d.images) and np.array_equal(labels, d.target)
    monkeypatch.setattr(digits.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FitnetsError, match=r"needs scikit-learn: pip install 'fitnets\[demo\]'"):
        digits._shipped()


def test_val_size_zero_limits_and_errors():
    pytest.importorskip("sklearn")
    full = load_dataset("digits", val_size=0)
    assert full.val is None
    ds = load_dataset("digits", val_size=100, train_limit=50, test_limit=20)
    assert len(ds.train) == 50 and len(ds.val) == 100 and len(ds.test) == 20
    # Limits keep a seeded, class-balanced subset (issue 12: the first N of a class-ordered
    # folder were 2 classes); validation is still the LAST val_size of the training set.
    assert torch.bincount(ds.train.y, minlength=10).tolist() == [5] * 10
    assert torch.bincount(ds.test.y, minlength=10).tolist() == [2] * 10
    rows = [int((full.train.x == x).flatten(1).all(1).nonzero()[0]) for x in ds.train.x]
    assert rows == sorted(rows) and max(rows) < len(full.train) - 100  # in order, not from val
    again = load_dataset("digits", val_size=100, train_limit=50, test_limit=20)
    assert torch.equal(again.train.x, ds.train.x)  # the same subset every time
    assert torch.equal(ds.val.x, full.train.x[-100:])
    with pytest.raises(FitnetsError, match="val_size"):
        load_dataset("digits", val_size=len(full.train))


def test_split_and_dataset_helpers():
    s = Split(torch.zeros(5, 3, 4, 4, dtype=torch.uint8), torch.arange(5))
    d = Dataset("x", s, None, s, ["a", "b"])
    assert d.num_classes == 2 and d.input_shape == (3, 4, 4) and len(s) == 5
    moved = s.to("cpu")
    assert moved.x.device.type == "cpu" and torch.equal(moved.y, s.y)


def test_balanced_subset_shares_out_classes_that_are_too_small():
    from fitnets.data.splits import balanced_subset

    labels = np.array([0] * 50 + [1] * 3 + [2] * 50)
    keep = balanced_subset(labels, 30)
    assert np.bincount(labels[keep]).tolist() == [14, 3, 13] or \
        np.bincount(labels[keep]).tolist() == [13, 3, 14]
    assert (np.diff(keep) > 0).all() and len(set(keep)) == 30
    assert (balanced_subset(labels, 30) == keep).all()  # seeded
    assert not (balanced_subset(labels, 30, seed=1) == keep).all()
    assert len(balanced_subset(labels, 500)) == len(labels)


def test_a_limit_on_a_class_ordered_folder_keeps_every_class(tmp_path):
    from PIL import Image

    for c in "abcdefghij":  # ten class folders, files in class order
        for split, n in (("train", 30), ("test", 3)):
            d = tmp_path / "f" / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (4, 4), (i, 0, 0)).save(d / f"{i}.png")
    ds = load_dataset("folder", tmp_path, path=str(tmp_path / "f"), val_size=0,
                      train_limit=100)
    assert torch.bincount(ds.train.y).tolist() == [10] * 10
