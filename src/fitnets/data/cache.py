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

CACHE_VERSION = 1
Arrays = dict[str, np.ndarray]


def cache_key(name: str, sources: Sequence[Path], options: dict) -> str:
    """Stable hash of the dataset name, its source files' identity and the options."""
    ident = []
    for p in sources:
        st = p.stat()
        ident.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps([CACHE_VERSION, name, ident, options], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


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


def _load(path: Path) -> Arrays | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None  # a damaged cache entry is simply rebuilt


def _save(path: Path, arrays: Arrays) -> None:
    # Write next to the target, then rename: readers never see a half-written file.
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cache is as readable as its data
        os.replace(tmp, path)
    except OSError:
        pass  # caching is an optimisation; failing to write it must not fail the load
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cached(
    root: Path, name: str, sources: Sequence[Path], options: dict,
    decode: Callable[[], Arrays],
) -> Arrays:
    """Return ``decode()``'s arrays, from the cache when an entry for this key exists."""
    folder = cache_dir(root)
    if folder is None:
        return decode()
    path = folder / f"{name}-{cache_key(name, sources, options)}.npz"
    if path.exists():
        arrays = _load(path)
        if arrays is not None:
            return arrays
    arrays = decode()
    _save(path, arrays)
    return arrays
