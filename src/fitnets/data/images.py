"""Decoding image files into uint8 (C, H, W) arrays: the rules every reader shares.

- **Channels**: ``L`` (grayscale) or ``RGB``; palette, CMYK, 16-bit and alpha images are
  converted by Pillow (alpha dropped, as on a white-less black background).
- **Size** (``data.image_size``): the shorter side is resized to ``image_size`` (bilinear,
  with Pillow's antialiasing when shrinking), then the central ``image_size`` x
  ``image_size`` square is cut out, so photos of mixed sizes and aspect ratios all become
  one square size without distortion (torchvision's Resize + CenterCrop).
- **Random-resized crop** (training, streaming): a crop covering 8-100% of the area with an
  aspect ratio in [3/4, 4/3], resized to the square size, and a horizontal flip with
  probability 1/2; the Inception/ResNet ImageNet augmentation. Its randomness comes from a
  seed per (epoch, image), so it does not depend on which worker decodes the image.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from fitnets.errors import FitnetsError

MODES = ("RGB", "L")
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def open_image(data: bytes, name: str, mode: str) -> Image.Image:
    """The decoded image converted to ``mode``; a clear error naming the file otherwise."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = ImageOps.exif_transpose(img)  # phone photos: the orientation they show
            return img.convert(mode)
    except Exception as err:  # Pillow raises several types for damaged images
        raise BadImage(f"Cannot read image {name}: {err}.") from err


class BadImage(FitnetsError):
    """A file that is not a readable image."""


def image_mode(data: bytes) -> str:
    """``L`` when the image is single-channel (grayscale, 1-bit, 16-bit gray), else ``RGB``."""
    with Image.open(io.BytesIO(data)) as img:
        bands = img.getbands()
        if img.mode == "P":  # a palette: grayscale only if every colour is gray
            pal = np.array(img.getpalette() or [], dtype=np.int64).reshape(-1, 3)
            return "L" if len(pal) and (pal == pal[:, :1]).all() else "RGB"
        return "L" if bands in (("L",), ("1",), ("I",), ("F",), ("L", "A"), ("I;16",)) \
            else "RGB"


def center_fit(img: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size``, then the central ``size`` x ``size`` square."""
    w, h = img.size
    if (w, h) != (size, size):
        s = size / min(w, h)
        nw, nh = max(size, round(w * s)), max(size, round(h * s))
        img = img.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return img


def random_resized_crop(img: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """A random crop of 8-100% of the area, aspect ratio 3/4..4/3, resized to ``size``,
    mirrored with probability 1/2 (10 tries, then the central crop of the whole image)."""
    w, h = img.size
    area = w * h
    box = None
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        ratio = math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            box = (left, top, left + cw, top + ch)
            break
    if box is None:
        side = min(w, h)
        box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    img = img.resize((size, size), Image.BILINEAR, box=box, reducing_gap=None)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img


def to_array(img: Image.Image) -> np.ndarray:
    """(C, H, W) uint8."""
    arr = np.array(img, dtype=np.uint8)  # a copy: torch wants writable memory
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


@dataclass(frozen=True)
class FileRef:
    """One image: a file, or a member of a zip (``container``), and its class index."""

    name: str
    label: int
    container: str | None = None

    def shown(self) -> str:
        return f"{self.container}:{self.name}" if self.container else self.name


_ZIPS: dict[tuple, zipfile.ZipFile] = {}  # per process: workers open their own


def read_bytes(ref: FileRef) -> bytes:
    if ref.container is None:
        with open(ref.name, "rb") as f:
            return f.read()
    st = os.stat(ref.container)  # a rewritten zip is a new one: reopen it
    key = (os.getpid(), ref.container, st.st_mtime_ns, st.st_size, st.st_ino)
    if key not in _ZIPS:
        for old in [k for k in _ZIPS if k[:2] == key[:2]]:
            _ZIPS.pop(old).close()
        _ZIPS[key] = zipfile.ZipFile(ref.container)
    return _ZIPS[key].read(ref.name)


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
