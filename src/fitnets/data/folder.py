"""Image-folder datasets in a folder or a zip, laid out by split and class:

    train/<class>/*   the training images (required)
    val/<class>/*     optional: the validation split (ImageNet's layout: val/<wnid>/*.JPEG)
    test/<class>/*    optional when val/ exists (then val/ is also the test split)

Any format Pillow reads, any sizes (``image_size``: shorter side resized, centre crop; see
fitnets.data.images), gray or colour (``mode`` L/RGB, or auto: L when every image is single-
channel). Class index = position of the class folder name in sorted order. Hidden files and
macOS resource forks are skipped. ``Folder`` is the source: it lists the files once (all a
streamed run needs) and decodes them into arrays, through the cache, for the in-memory path.
Because files come class by class, each split's list is put through a fixed-seed
permutation: "the last ``val_size`` images" then mix all classes, and the order is
reproducible.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fitnets.data import cache
from fitnets.data.images import MODES, FileRef, decode_refs, image_mode, read_bytes
from fitnets.data.source import SPLITS, Decoded, Images
from fitnets.errors import FitnetsError

SHUFFLE_SEED = 0
AUTO_SAMPLE = 2000  # files whose headers decide mode=auto when only listing (streaming)


@dataclass
class Listing:
    """The files of a folder or zip, by split (shuffled with SHUFFLE_SEED), and classes."""

    path: Path
    classes: list[str]
    splits: dict[str, list[FileRef]]  # train, and test and/or val: the folder's own


def _split_parts(rel: str) -> tuple[str, str] | None:
    """(split, class) for ``[prefix/]train|val|test/<class>/<file>``; None for anything else."""
    parts = rel.replace("\\", "/").split("/")
    if len(parts) < 3 or parts[-3] not in SPLITS:
        return None
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None  # hidden files and macOS resource forks are not images
    return parts[-3], parts[-2]


def walk(path: Path) -> list[Path]:
    """Every file under a folder, in sorted order."""
    return [f for f in sorted(path.rglob("*")) if f.is_file()]


def _entries(path: Path, files: list[Path] | None) -> list[tuple[str, str, str, str | None]]:
    """(split, class, name, container) for every image file of the folder (its ``files``,
    when walked already) or zip."""
    if path.is_dir():
        found = []
        for f in walk(path) if files is None else files:
            sc = _split_parts(f.relative_to(path).as_posix())
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


def list_folder(path: Path, files: list[Path] | None = None) -> Listing:
    """List the images of a folder (of its ``files``, when walked already) or zip (nothing
    is decoded)."""
    entries = _entries(path, files)
    classes = _classes(entries, path)
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for s in SPLITS:
        refs = [FileRef(name, index[c], box) for split, c, name, box in entries if split == s]
        if refs:
            perm = np.random.default_rng(SHUFFLE_SEED).permutation(len(refs))
            splits[s] = [refs[i] for i in perm]
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


def source_files(path: Path, files: list[Path] | None = None) -> list[Path]:
    """The files whose identity keys the cache: the zip, or every file in the folder (its
    ``files``, when walked already)."""
    if path.is_dir():  # hidden entries (our own .fitnets-cache included) are not sources
        return [f for f in (walk(path) if files is None else files)
                if not any(p.startswith(".") for p in f.relative_to(path).parts)]
    return [path]


def decode(listing: Listing, *, size: tuple[int, int] | None = None, mode: str = "RGB",
           resize: bool = False, image_size: int | None = None, skip_bad: bool = False,
           say: Callable[[str], None] = print) -> Decoded:
    """Decode every split of ``listing`` (test: val/'s arrays when the folder has no test/);
    bad files skipped (``skip_bad``) are counted and named by ``say``."""
    if mode == "auto":
        mode = detect_mode([r for refs in listing.splits.values() for r in refs])
    out: dict[str, Images] = {}
    skipped: list[str] = []
    for s, refs in listing.splits.items():
        x, y, bad = decode_refs(refs, mode, size=size, resize=resize, image_size=image_size,
                                skip_bad=skip_bad, desc=f"decoding {s}")
        out[s] = Images(x, y)
        skipped += bad
        size = size or (None if image_size else x.shape[2:])  # later splits match train
    if "test" not in out:  # its own entry, as the cache has always had it
        out["test"] = out["val"]
    if skipped:
        say(f"skipped {len(skipped)} unreadable image(s) (data.skip_bad_images), e.g. "
            f"{', '.join(skipped[:3])}")
    return Decoded(out, listing.classes)


def _resolve(root: Path, path: str) -> Path:
    """``path``, or relative to the data root where it is not relative to the working folder."""
    p = Path(path).expanduser()
    return root / p if not p.exists() and not p.is_absolute() and (root / p).exists() else p


class Folder:
    """A folder or zip laid out as above, listed and decoded once: a ``Source``."""

    OPTIONS = ("size", "mode", "resize", "image_size", "skip_bad")
    paper_val = None

    def __init__(self, name: str, root: Path, *, download: bool = True,
                 path: str | None = None, size: tuple[int, int] | None = None,
                 mode: str = "RGB", resize: bool = False, image_size: int | None = None,
                 skip_bad: bool = False):
        if path is None:
            raise FitnetsError(f"Dataset '{name}' needs path= a folder or .zip laid out as "
                               "train/<class>/* and test/<class>/*.")
        self.name, self.root, self.path = name, root, _resolve(root, path)
        if not self.path.exists():
            raise FitnetsError(f"Image folder path {self.path} does not exist. Pass path= an "
                               "existing folder or .zip with train/<class>/ and test/<class>/ "
                               "inside.")
        if mode not in (*MODES, "auto"):
            raise FitnetsError(f"mode={mode!r} is not valid for an image folder; use one of "
                               f"{MODES} (or auto).")
        if resize and size is None:
            raise FitnetsError("resize=True needs size=(H, W) to say what to resize to.")
        # as given: the cache key has always had them so
        self.options = {"size": size, "mode": mode, "resize": resize,
                        "image_size": image_size, "skip_bad": skip_bad}
        self._decoding = {**self.options, "size": None if size is None else
                          (int(size[0]), int(size[1]))}
        self._walked: list[Path] | None = None
        self._listing: Listing | None = None
        self._decoded: Decoded | None = None

    def splits(self) -> tuple[str, ...]:
        return tuple(self.listing().splits)

    def classes(self) -> list[str]:
        return self.listing().classes

    def files(self, split: str) -> list[FileRef]:
        splits = self.listing().splits
        return splits[split] if split in splits else splits["val"]

    def arrays(self, split: str) -> Images:
        if self._decoded is None:
            self._decoded = cache.cached(self.root, self.cache_key(),
                                         lambda: decode(self.listing(), **self._decoding))
        return self._decoded.splits[split]

    def cache_key(self) -> str:
        return cache.entry(self.name, source_files(self.path, self._files()), self.options)

    def listing(self) -> Listing:
        if self._listing is None:
            self._listing = list_folder(self.path, self._files())
        return self._listing

    def _files(self) -> list[Path] | None:
        """A folder's files, found once (None for a zip)."""
        if self._walked is None and self.path.is_dir():
            self._walked = walk(self.path)
        return self._walked
