"""Cache of decoded datasets as uint8 .npz files, keyed by source files and options.

Decoding an image-folder zip of 60k JPEGs takes a while; the arrays it yields are cached
under ``<root>/.fitnets-cache/`` or, when the data root is read-only (a shared dataset
folder), under ``~/.cache/fitnets/cache/``. The key covers each source file's absolute
path, size and modification time, so replacing a file invalidates its cache entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fitnets.data.source import SPLITS, Decoded, Images

CACHE_VERSION = 1


def cache_key(name: str, sources: Sequence[Path], options: dict) -> str:
    """Stable hash of the dataset name, its source files' identity and the options."""
    ident = []
    for p in sources:
        st = p.stat()
        ident.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps([CACHE_VERSION, name, ident, options], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def entry(name: str, sources: Sequence[Path], options: dict) -> str:
    """A cache entry's name: the dataset's, then ``cache_key``."""
    return f"{name}-{cache_key(name, sources, options)}"


def _looks_writable(path: Path) -> bool:
    """Permission bits say writable. Checked explicitly because root ignores them, and a
    folder shipped read-only (a shared dataset copy) must not be written into even then."""
    while not path.exists():
        path = path.parent
    return os.access(path, os.W_OK) and bool(path.stat().st_mode & 0o222)


def _writable_dir(path: Path) -> bool:
    if not _looks_writable(path):
        return False
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path)
        os.close(fd)
        os.unlink(probe)
        return True
    except OSError:
        return False


def cache_dir(root: Path) -> Path | None:
    """The first writable cache folder, or None (then nothing is cached).

    $FITNETS_CACHE, when set, comes first; then a folder beside the data; then ~/.cache.
    """
    env = os.environ.get("FITNETS_CACHE")
    first = [Path(env).expanduser()] if env else []
    for d in (*first, root / ".fitnets-cache", Path.home() / ".cache" / "fitnets" / "cache"):
        if _writable_dir(d):
            return d
    return None


def _load(path: Path) -> Decoded | None:
    """An entry's arrays: ``<split>_x``, ``<split>_y`` for each split, and ``classes``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            splits = {s: Images(z[f"{s}_x"], z[f"{s}_y"]) for s in SPLITS if f"{s}_x" in z}
            return Decoded(splits, [str(c) for c in z["classes"]])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None  # a damaged cache entry is simply rebuilt


def _save(path: Path, decoded: Decoded) -> None:
    arrays = {f"{s}_{k}": a for s, images in decoded.splits.items()
              for k, a in zip("xy", images)}
    # Write next to the target, then rename: readers never see a half-written file.
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays, classes=np.array(decoded.classes))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cache is as readable as its data
        os.replace(tmp, path)
    except OSError:
        pass  # caching is an optimisation; failing to write it must not fail the load
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cached(root: Path, name: str, decode: Callable[[], Decoded]) -> Decoded:
    """``decode()``'s arrays, from the cache entry ``name`` (``entry``) when there is one."""
    folder = cache_dir(root)
    if folder is None:
        return decode()
    path = folder / f"{name}.npz"
    if path.exists():
        decoded = _load(path)
        if decoded is not None:
            return decoded
    decoded = decode()
    _save(path, decoded)
    return decoded
