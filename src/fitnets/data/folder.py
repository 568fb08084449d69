"""Image-folder datasets in a folder or a zip, laid out by split and class:

    train/<class>/*   the training images (required)
    val/<class>/*     optional: the validation split (ImageNet's layout: val/<wnid>/*.JPEG)
    test/<class>/*    optional when val/ exists (then val/ is also the test split)

Any format Pillow reads, any sizes (``image_size``: shorter side resized, centre crop; see
fitnets.data.images), gray or colour (``mode`` L/RGB, or auto: L when every image is single-
channel). Class index = position of the class folder name in sorted order. Hidden files and
macOS resource forks are skipped. ``list_folder`` only lists (cheap, for streaming);
``decode_folder`` decodes everything into arrays (for the in-memory path). Because files come
class by class, the decoded splits are put through a fixed-seed permutation: "the last
``val_size`` images" then mix all classes, and the order is reproducible.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from fitnets.data.images import (
    BadImage,
    FileRef,
    center_fit,
    image_mode,
    open_image,
    read_bytes,
    to_array,
)
from fitnets.errors import FitnetsError

MODES = ("RGB", "L")
SHUFFLE_SEED = 0
SPLITS = ("train", "val", "test")
AUTO_SAMPLE = 2000  # files whose headers decide mode=auto when only listing (streaming)


@dataclass
class Listing:
    """The files of a folder or zip, by split (shuffled with SHUFFLE_SEED), and classes."""

    path: Path
    classes: list[str]
    splits: dict[str, list[FileRef]]  # train, test, and val when the folder has val/


def _split_parts(rel: str) -> tuple[str, str] | None:
    """(split, class) for ``[prefix/]train|val|test/<class>/<file>``; None for anything else."""
    parts = rel.replace("\\", "/").split("/")
    if len(parts) < 3 or parts[-3] not in SPLITS:
        return None
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None  # hidden files and macOS resource forks are not images
    return parts[-3], parts[-2]


def _entries(path: Path) -> list[tuple[str, str, str, str | None]]:
    """(split, class, name, container) for every image file of the folder or zip."""
    if path.is_dir():
        found = []
        for f in sorted(path.rglob("*")):
            sc = _split_parts(f.relative_to(path).as_posix()) if f.is_file() else None
            if sc:
                found.append((*sc, str(f), None))
        return found
    if not path.is_file():
        raise FitnetsError(f"Image folder path {path} does not exist. Pass path= a folder "
                           "or .zip with train/<class>/ and test/<class>/ (or val/<class>/).")
    try:
        with zipfile.ZipFile(path) as zf:
            names = sorted(i.filename for i in zf.infolist() if not i.is_dir())
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise FitnetsError(f"Cannot open zip {path}: {e}. The file is corrupt or not a zip; "
                           "replace it.") from e
    return [(*sc, n, str(path)) for n in names if (sc := _split_parts(n))]


def _classes(entries: list, path: Path) -> list[str]:
    found = {s: sorted({e[1] for e in entries if e[0] == s}) for s in SPLITS}
    if not found["train"] or not (found["test"] or found["val"]):
        raise FitnetsError(f"Image folder {path} has no images under train/<class>/ and "
                           "test/<class>/ (or val/<class>/). Lay it out as train/<class>/*.jpg "
                           "and test/<class>/*.jpg (any format Pillow reads).")
    if len(found["train"]) < 2:
        raise FitnetsError(f"Image folder {path} has only one class ({found['train'][0]}); "
                           "classification needs at least two class folders under train/.")
    for s in ("val", "test"):
        if found[s] and found[s] != found["train"]:
            diff = sorted(set(found[s]) ^ set(found["train"]))
            raise FitnetsError(f"Image folder {path}: {s} classes {found[s]} differ from train "
                               f"classes {found['train']} (only in one: {', '.join(diff)}). "
                               "Give both the same class folders.")
    return found["train"]


def list_folder(path: Path) -> Listing:
    """List the images of a folder or zip (nothing is decoded)."""
    entries = _entries(path)
    classes = _classes(entries, path)
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for s in SPLITS:
        refs = [FileRef(name, index[c], box) for split, c, name, box in entries if split == s]
        if refs:
            perm = np.random.default_rng(SHUFFLE_SEED).permutation(len(refs))
            splits[s] = [refs[i] for i in perm]
    if "test" not in splits:
        splits["test"] = splits["val"]  # ImageNet's layout: val/ is what we test on
    return Listing(path, classes, splits)


def detect_mode(refs: list[FileRef], limit: int | None = None) -> str:
    """L when every image (or the first ``limit``) is single-channel, else RGB."""
    for ref in refs[:limit]:
        try:
            if image_mode(read_bytes(ref)) == "RGB":
                return "RGB"
        except Exception:  # a bad file is reported (or skipped) when it is decoded
            continue
    return "L"


def _fit(ref: FileRef, mode: str, size: tuple[int, int] | None, resize: bool,
         image_size: int | None) -> np.ndarray:
    img = open_image(read_bytes(ref), ref.shown(), mode)
    if image_size:
        return to_array(center_fit(img, image_size))
    if size is not None and img.size != (size[1], size[0]):
        if not resize:
            raise FitnetsError(
                f"Image {ref.shown()} is {img.size[1]}x{img.size[0]} (HxW) but the dataset's "
                f"images are {size[0]}x{size[1]}. Set data.image_size=N to fit every image to "
                "N x N (shorter side resized, centre crop), pass size=(H, W) with resize=True "
                "to convert them on load, or remove the odd file.")
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    return to_array(img)


def decode_refs(refs: list[FileRef], mode: str, *, size: tuple[int, int] | None = None,
                resize: bool = False, image_size: int | None = None, skip_bad: bool = False,
                desc: str = "decoding") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(uint8 images (N, C, H, W), labels, the names of bad files skipped)."""
    bad: list[str] = []
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    bar = tqdm(refs, desc=desc, unit="img", disable=len(refs) < 1000, leave=False)
    for ref in bar:
        try:
            a = _fit(ref, mode, size, resize, image_size)
        except BadImage as e:
            if not skip_bad:
                raise FitnetsError(f"{e} Remove or replace it, or set "
                                   "data.skip_bad_images=true to skip (and count) such files."
                                   ) from e
            bad.append(ref.shown())
            continue
        if size is None and image_size is None:
            size = a.shape[1:]  # without a size every image must match the first
        arrays.append(a)
        labels.append(ref.label)
    if not arrays:
        raise FitnetsError(f"No readable image among the {len(refs)} files of {desc}.")
    return np.stack(arrays), np.array(labels, dtype=np.int64), bad


def source_files(path: Path) -> list[Path]:
    """The files whose identity keys the cache: the zip, or every file in the folder."""
    if path.is_dir():  # hidden entries (our own .fitnets-cache included) are not sources
        return [f for f in sorted(path.rglob("*")) if f.is_file()
                and not any(p.startswith(".") for p in f.relative_to(path).parts)]
    return [path]


def decode_folder(path: Path, *, size: tuple[int, int] | None = None, mode: str = "RGB",
                  resize: bool = False, image_size: int | None = None,
                  skip_bad: bool = False, say: Callable[[str], None] = print,
                  ) -> dict[str, np.ndarray]:
    """Decode a folder or zip into train_x/train_y/test_x/test_y (val_x/val_y with val/)
    and class names; bad files skipped (``skip_bad``) are counted and named by ``say``."""
    if mode not in (*MODES, "auto"):
        raise FitnetsError(f"mode={mode!r} is not valid for an image folder; use one of "
                           f"{MODES} (or auto).")
    if size is not None:
        size = (int(size[0]), int(size[1]))
    if resize and size is None:
        raise FitnetsError("resize=True needs size=(H, W) to say what to resize to.")
    listing = list_folder(path)
    if mode == "auto":
        mode = detect_mode([r for refs in listing.splits.values() for r in refs])
    out: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    for s, refs in listing.splits.items():
        if s == "test" and refs is listing.splits.get("val"):
            out["test_x"], out["test_y"] = out["val_x"], out["val_y"]
            continue
        x, y, bad = decode_refs(refs, mode, size=size, resize=resize, image_size=image_size,
                                skip_bad=skip_bad, desc=f"decoding {s}")
        out[f"{s}_x"], out[f"{s}_y"] = x, y
        skipped += bad
        size = size or (None if image_size else x.shape[2:])  # later splits match train
    if skipped:
        say(f"skipped {len(skipped)} unreadable image(s) (data.skip_bad_images), e.g. "
            f"{', '.join(skipped[:3])}")
    out["classes"] = np.array(listing.classes)
    return out
