"""Image-folder datasets (folder and zip, PNG and JPEG), the cifar10-jpeg zip, and the cache."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fitnets.data import folder, load_dataset
from fitnets.errors import FitnetsError

# integration: Pillow (.ci/run's locked run checks these under its pins)
pytestmark = pytest.mark.integration

CLASSES = ["cat", "ant", "bee"]  # deliberately unsorted: index must follow sorted order


def image_bytes(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def tree(rng, n=4, size=(6, 5), classes=CLASSES) -> dict[str, np.ndarray]:
    """Relative path -> RGB image; class k images are filled with value 40*k + noise."""
    files = {}
    for split in ("train", "test"):
        for c in classes:
            for i in range(n):
                base = 40 * sorted(classes).index(c)
                files[f"{split}/{c}/{i:03d}"] = (base + rng.integers(0, 8, (*size, 3))).astype(
                    np.uint8)
    return files


def write_dir(root: Path, files: dict, fmt="PNG") -> Path:
    for rel, arr in files.items():
        p = root / f"{rel}.{fmt.lower()}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(image_bytes(arr, fmt))
    return root


def write_zip(path: Path, files: dict, prefix="") -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for i, (rel, arr) in enumerate(files.items()):
            fmt = "PNG" if i % 2 else "JPEG"  # both formats in one archive
            z.writestr(f"{prefix}{rel}.{fmt.lower()}", image_bytes(arr, fmt))
    return path


def test_dir_png_labels_follow_sorted_class_names(tmp_path):
    files = tree(np.random.default_rng(0))
    write_dir(tmp_path / "imgs", files)
    ds = load_dataset("folder", tmp_path, path=str(tmp_path / "imgs"), val_size=0)
    assert ds.classes == ["ant", "bee", "cat"] and ds.input_shape == (3, 6, 5)
    assert len(ds.train) == 12 and len(ds.test) == 12
    # Lossless PNG: every image matches its file, and its label is its class's index.
    for x, y in zip(ds.train.x, ds.train.y):
        assert int(x.float().mean() // 40) == int(y)
    decoded = {tuple(x.flatten().tolist()) for x in ds.test.x}
    want = {tuple(a.transpose(2, 0, 1).flatten().tolist())
            for r, a in files.items() if r.startswith("test")}
    assert decoded == want


def test_zip_with_png_and_jpeg_and_prefix(tmp_path):
    files = tree(np.random.default_rng(1))
    z = write_zip(tmp_path / "imgs.zip", files, prefix="mydata/")
    ds = load_dataset("folder", tmp_path, path=str(z), val_size=3)
    assert len(ds.train) == 9 and len(ds.val) == 3 and ds.num_classes == 3
    for x, y in zip(ds.test.x, ds.test.y):  # JPEG is lossy, but not by 20 levels
        assert abs(float(x.float().mean()) - (40 * int(y) + 3.5)) < 10


def test_mode_l_and_resize(tmp_path):
    files = tree(np.random.default_rng(2))
    files["train/ant/odd"] = np.zeros((9, 9, 3), np.uint8)
    write_dir(tmp_path / "imgs", files)
    with pytest.raises(FitnetsError, match="odd.png.*9x9.*resize=True"):
        load_dataset("folder", tmp_path, path=str(tmp_path / "imgs"))
    ds = load_dataset("folder", tmp_path, path=str(tmp_path / "imgs"), size=(4, 4),
                      resize=True, mode="L", val_size=0)
    assert ds.input_shape == (1, 4, 4) and len(ds.train) == 13


@pytest.mark.parametrize("bad,match", [
    ({"mode": "CMYK"}, "mode='CMYK'.*RGB"),
    ({"colour": 1}, "Unknown option.*colour.*size, mode, resize"),
])
def test_bad_options(tmp_path, bad, match):
    write_dir(tmp_path / "imgs", tree(np.random.default_rng(0)))
    with pytest.raises(FitnetsError, match=match):
        load_dataset("folder", tmp_path, path=str(tmp_path / "imgs"), **bad)


def test_structure_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FitnetsError, match="empty.*no images"):
        load_dataset("folder", tmp_path, path=str(tmp_path / "empty"))
    write_dir(tmp_path / "one", tree(np.random.default_rng(0), classes=["solo"]))
    with pytest.raises(FitnetsError, match="only one class"):
        load_dataset("folder", tmp_path, path=str(tmp_path / "one"))
    files = tree(np.random.default_rng(0))
    files = {k: v for k, v in files.items() if not k.startswith("test/bee")}
    write_dir(tmp_path / "diff", files)
    with pytest.raises(FitnetsError, match="differ"):
        load_dataset("folder", tmp_path, path=str(tmp_path / "diff"))
    with pytest.raises(FitnetsError, match="needs path="):
        load_dataset("folder", tmp_path)
    with pytest.raises(FitnetsError, match="does not exist"):
        load_dataset("folder", tmp_path, path=str(tmp_path / "nope"))


def test_unreadable_image_names_file(tmp_path):
    write_dir(tmp_path / "imgs", tree(np.random.default_rng(0)))
    (tmp_path / "imgs" / "test" / "bee" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(FitnetsError, match="broken.png"):
        load_dataset("folder", tmp_path, path=str(tmp_path / "imgs"))


def test_corrupt_zip_names_file(tmp_path):
    z = write_zip(tmp_path / "imgs.zip", tree(np.random.default_rng(0)))
    z.write_bytes(z.read_bytes()[:-60])  # cut into the central directory
    with pytest.raises(FitnetsError, match="imgs.zip"):
        load_dataset("folder", tmp_path, path=str(z))


def test_cifar10_falls_back_to_jpeg_zip(tmp_path):
    names = ["airplane", "automobile", "bird"]
    write_zip(tmp_path / "cifar10-jpeg.zip",
              tree(np.random.default_rng(3), n=5, size=(32, 32), classes=names))
    ds = load_dataset("cifar10", tmp_path, val_size=0, train_limit=7, download=False)
    assert ds.classes == names and ds.input_shape == (3, 32, 32)
    assert len(ds.train) == 7 and len(ds.test) == 15
    # Files come class by class; the fixed shuffle must mix them (first 7 not one class).
    assert len(set(ds.train.y.tolist())) > 1


def test_cache_hit_and_invalidation(tmp_path, monkeypatch):
    z = write_zip(tmp_path / "imgs.zip", tree(np.random.default_rng(4)))
    first = load_dataset("folder", tmp_path, path=str(z), val_size=0)
    real = folder.decode

    def boom(*a, **k):
        raise AssertionError("decoded again instead of using the cache")
    monkeypatch.setattr(folder, "decode", boom)
    second = load_dataset("folder", tmp_path, path=str(z), val_size=0)
    assert (first.train.x == second.train.x).all() and second.classes == first.classes
    with pytest.raises(AssertionError, match="decoded again"):  # options are in the key
        load_dataset("folder", tmp_path, path=str(z), mode="L")
    monkeypatch.setattr(folder, "decode", real)
    write_zip(z, tree(np.random.default_rng(5), n=2))  # new file, new size: new key
    assert len(load_dataset("folder", tmp_path, path=str(z), val_size=0).train) == 6


def test_read_only_root_caches_under_home(tmp_path, monkeypatch):
    data = tmp_path / "shared"
    data.mkdir()
    write_zip(data / "imgs.zip", tree(np.random.default_rng(6)))
    data.chmod(0o555)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    try:
        load_dataset("folder", data, path="imgs.zip")  # relative to the root
        assert not (data / ".fitnets-cache").exists()
        assert list((tmp_path / "home" / ".cache" / "fitnets" / "cache").glob("folder-*.npz"))
    finally:
        data.chmod(0o755)


@pytest.mark.parametrize("mode", ["auto", "stream"])
def test_the_start_line_counts_the_images_the_run_holds_at_their_channels(tmp_path, mode):
    """A grayscale zip read with data.train_limit: the start line names the limited count
    (train 40 of 60 after 12 held out + 16 test = 68) and 1 channel, the shape the model
    is fed, not every listed image at 3 channels."""
    import torch

    from fitnets.config import DataConfig
    from fitnets.data.prepare import prepare

    rng = np.random.default_rng(0)
    files = {rel: a[..., 0] for rel, a in tree(rng, n=20, size=(8, 8)).items()}
    files = {k: v for k, v in files.items() if not (k.startswith("test/") and int(k[-3:]) > 5)}
    path = write_zip(tmp_path / "gray.zip", files)
    n_test = sum(k.startswith("test/") for k in files)
    d = DataConfig(name="folder", path=str(path), val_size=12, train_limit=40, mode=mode,
                   batch_size=8, workers=0)
    prepared = prepare(d, torch.device("cpu"))
    assert prepared.input_shape[0] == 1
    n = 40 + 12 + n_test
    assert f"data: {n:,} images of 1x8x8 = " in prepared.how, prepared.how
