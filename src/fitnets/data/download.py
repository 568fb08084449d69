"""Checksummed downloads: temp file + atomic rename, several mirrors tried in order."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from fitnets.errors import FitnetsError

_CHUNK = 1 << 20


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` and verify its checksum; return ``dest``.

    The data goes to a temporary file next to ``dest`` and is renamed only once complete
    and verified, so an interrupted or corrupt download never leaves a plausible file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        hashes = {k: hashlib.new(k) for k, v in (("md5", md5), ("sha256", sha256)) if v}
        with os.fdopen(fd, "wb") as out:
            _stream(url, out, hashes, progress, dest.name)
        for algo, expected in (("md5", md5), ("sha256", sha256)):
            if expected and hashes[algo].hexdigest() != expected.lower():
                raise FitnetsError(
                    f"Checksum mismatch for {dest.name} downloaded from {url}: expected "
                    f"{algo} {expected}, got {hashes[algo].hexdigest()}. The download is "
                    f"corrupt or the server changed the file; it was deleted. Retry later, "
                    f"or download the file by hand and place it at {dest}."
                )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _stream(url: str, out, hashes: dict, progress: bool, label: str) -> None:
    """Copy ``url`` into ``out`` while hashing; network failures become FitnetsError."""
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=label,
                      disable=not progress, leave=False) as bar:
                for block in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(block)
                    for h in hashes.values():
                        h.update(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise FitnetsError(f"Could not download {url}: {e}.") from e


def fetch(
    urls: Sequence[str], dest: str | os.PathLike, *, md5: str | None = None,
    progress: bool = True,
) -> Path:
    """Try each mirror URL in order; raise one error listing every failure."""
    errors = []
    for url in urls:
        try:
            return download_file(url, dest, md5=md5, progress=progress)
        except FitnetsError as e:
            errors.append(str(e))
    raise FitnetsError(" ".join(errors) + f" All mirrors failed for {Path(dest).name}.")


def missing_files_error(dataset: str, files: Sequence[str], folder: Path, why: str) -> FitnetsError:
    """The message for absent dataset files: what to place where, and FITNETS_DATA."""
    return FitnetsError(
        f"Dataset '{dataset}' is not available: {why}. Place the file(s) "
        f"{', '.join(files)} in {folder} (or point the FITNETS_DATA environment variable "
        f"or the data root option at a folder that holds them), or enable downloading "
        f"when you have internet access."
    )
