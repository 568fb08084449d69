"""Image-folder datasets: ``train/<class>/*`` and ``test/<class>/*`` in a folder or a zip.

Images are decoded from the zip in memory (never extracted to disk). Class index is the
position of the class folder name in sorted order. Because files come class by class, the
decoded splits are put through a fixed-seed permutation: "the last ``val_size`` images" and
"the first ``train_limit`` images" then mix all classes, and the order is reproducible.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from fitnets.errors import FitnetsError

MODES = ("RGB", "L")
SHUFFLE_SEED = 0
_SPLITS = ("train", "test")


@dataclass
class _Entry:
    split: str
    cls: str
    name: str          # shown in error messages
    read: Callable[[], bytes]


def _split_parts(rel: str) -> tuple[str, str] | None:
    """(split, class) for ``[prefix/]train|test/<class>/<file>``; None for anything else."""
    parts = rel.replace("\\", "/").split("/")
    if len(parts) < 3 or parts[-3] not in _SPLITS:
        return None
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None  # hidden files and macOS resource forks are not images
    return parts[-3], parts[-2]


def _list_dir(path: Path) -> list[_Entry]:
    entries = []
    for f in sorted(path.rglob("*")):
        sc = _split_parts(f.relative_to(path).as_posix()) if f.is_file() else None
        if sc:
            entries.append(_Entry(sc[0], sc[1], str(f), f.read_bytes))
    return entries


def _list_zip(path: Path) -> tuple[list[_Entry], zipfile.ZipFile]:
    try:
        zf = zipfile.ZipFile(path)
        infos = [i for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise FitnetsError(f"Cannot open zip {path}: {e}. The file is corrupt or not a zip; "
                           "replace it.") from e
    entries = []
    for info in sorted(infos, key=lambda i: i.filename):
        sc = _split_parts(info.filename)
        if sc:
            entries.append(_Entry(sc[0], sc[1], f"{path}:{info.filename}",
                                  lambda i=info: zf.read(i)))
    return entries, zf


def _classes(entries: list[_Entry], path: Path) -> list[str]:
    found = {s: sorted({e.cls for e in entries if e.split == s}) for s in _SPLITS}
    if not found["train"] or not found["test"]:
        raise FitnetsError(f"Image folder {path} has no images under train/<class>/ or "
                           "test/<class>/. Lay it out as train/<class>/*.png and "
                           "test/<class>/*.png (any format Pillow reads).")
    if len(found["train"]) < 2:
        raise FitnetsError(f"Image folder {path} has only one class ({found['train'][0]}); "
                           "classification needs at least two class folders under train/.")
    if found["train"] != found["test"]:
        raise FitnetsError(f"Image folder {path}: train classes {found['train']} differ from "
                           f"test classes {found['test']}. Give both the same class folders.")
    return found["train"]


def _decode(e: _Entry, mode: str, size: tuple[int, int] | None, resize: bool) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(e.read())) as img:
            img = img.convert(mode)
    except Exception as err:  # Pillow raises several types for damaged images
        raise FitnetsError(f"Cannot read image {e.name}: {err}. Remove or replace it.") from err
    if size is not None and img.size != (size[1], size[0]):
        if not resize:
            raise FitnetsError(
                f"Image {e.name} is {img.size[1]}x{img.size[0]} (HxW) but the dataset's "
                f"images are {size[0]}x{size[1]}. Resize the images, pass size=(H, W) with "
                "resize=True to convert them on load, or remove the odd file.")
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _decode_split(entries: list[_Entry], classes: list[str], mode: str,
                  size: tuple[int, int] | None, resize: bool) -> tuple[np.ndarray, np.ndarray]:
    y = np.array([classes.index(e.cls) for e in entries], dtype=np.int64)
    first = _decode(entries[0], mode, size, resize)
    x = np.empty((len(entries), *first.shape), dtype=np.uint8)
    x[0] = first
    size = size or first.shape[1:]  # without size= every image must match the first
    bar = tqdm(entries[1:], desc=f"decoding {entries[0].split}", unit="img",
               total=len(entries), initial=1,  # the count of images, the first included
               disable=len(entries) < 1000, leave=False)
    for i, e in enumerate(bar, start=1):
        x[i] = _decode(e, mode, size, resize)
    perm = np.random.default_rng(SHUFFLE_SEED).permutation(len(y))
    return x[perm], y[perm]


def source_files(path: Path) -> list[Path]:
    """The files whose identity keys the cache: the zip, or every file in the folder."""
    if path.is_dir():  # hidden entries (our own .fitnets-cache included) are not sources
        return [f for f in sorted(path.rglob("*")) if f.is_file()
                and not any(p.startswith(".") for p in f.relative_to(path).parts)]
    return [path]


def decode_folder(path: Path, *, size: tuple[int, int] | None = None, mode: str = "RGB",
                  resize: bool = False) -> dict[str, np.ndarray]:
    """Decode a folder or zip into train_x/train_y/test_x/test_y and class names."""
    if mode not in MODES:
        raise FitnetsError(f"mode={mode!r} is not valid for an image folder; use one of {MODES}.")
    if size is not None:
        size = (int(size[0]), int(size[1]))
    if resize and size is None:
        raise FitnetsError("resize=True needs size=(H, W) to say what to resize to.")
    zf = None
    if path.is_dir():
        entries = _list_dir(path)
    elif path.is_file():
        entries, zf = _list_zip(path)
    else:
        raise FitnetsError(f"Image folder path {path} does not exist. Pass path= a folder "
                           "or .zip with train/<class>/ and test/<class>/ inside.")
    try:
        classes = _classes(entries, path)
        out = {}
        for s in _SPLITS:
            part = [e for e in entries if e.split == s]
            out[f"{s}_x"], out[f"{s}_y"] = _decode_split(part, classes, mode, size, resize)
            size = size or out[f"{s}_x"].shape[2:]  # test images must match train's size
    finally:
        if zf is not None:
            zf.close()
    out["classes"] = np.array(classes)
    return out
