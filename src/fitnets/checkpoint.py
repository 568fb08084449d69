"""Atomic, checksummed checkpoints; weights-only loading.

Each save writes ``ckpt-NNNNNN.pt`` (temporary file, flush, fsync, rename) and then its
``.sha256`` sidecar the same way; only then are older checkpoints deleted (two are kept).
A kill at any moment therefore leaves at least one checkpoint whose checksum matches.
Loading verifies the checksum, falls back to the previous checkpoint with a warning, and
uses ``torch.load(weights_only=True)``: a checkpoint can hold tensors and plain containers
only, so loading one never runs code from the file.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from fitnets.errors import FitnetsError

_NAME = re.compile(r"^ckpt-(\d{6})\.pt$")
KEEP = 2


# --- TEST HOOK --------------------------------------------------------------------------
# FITNETS_TEST_KILL_AT=EVENT:N[:STOP] makes this process SIGKILL itself (or SIGSTOP, to
# freeze it while it holds its run directory's lock) at the N-th EVENT it reaches:
#   step   after the N-th optimiser step (train.py)
#   save   after the N-th checkpoint is complete (file and checksum)
#   write  halfway through the N-th atomic file write (checkpoint, checksum, model.pt, ...)
# Used only by tests/test_reliability.py and tools/kill_resume.py; unset, it costs nothing.
_kill_counts: dict[str, int] = {}


def kill_point(event: str) -> None:
    spec = os.environ.get("FITNETS_TEST_KILL_AT")
    if not spec or not spec.startswith(event + ":"):
        return
    _, n, *how = spec.split(":")
    _kill_counts[event] = _kill_counts.get(event, 0) + 1
    if _kill_counts[event] == int(n):
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGSTOP if how == ["STOP"] else signal.SIGKILL)
# -----------------------------------------------------------------------------------------


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new, never half.

    Any OSError (full disk, permissions) becomes a FitnetsError; the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            _write_all(f, data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise FitnetsError(
            f"cannot write '{path}': {e.strerror or e}. The previous version of the file (and "
            "every earlier checkpoint) is intact; free some space or fix the permissions, then "
            "continue the run with --resume RUN_DIR."
        ) from None
    _fsync_dir(path.parent)


def _write_all(f, data: bytes) -> None:
    half = len(data) // 2
    f.write(data[:half])
    f.flush()
    kill_point("write")
    f.write(data[half:])
    f.flush()
    os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def to_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_weights(obj: Any, path: str | Path) -> None:
    """torch.save, atomically (for model.pt and other single files)."""
    atomic_write(Path(path), to_bytes(obj))


def load_weights(path: str | Path, map_location: Any = "cpu") -> Any:
    """Weights-only load with an error a user can act on."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise FitnetsError(f"weights file '{path}' does not exist.") from None
    except Exception as e:  # pickle.UnpicklingError, RuntimeError (zip), EOFError ...
        raise FitnetsError(
            f"cannot load '{path}' as PyTorch weights: {str(e).splitlines()[0][:300]} "
            "Only tensors and plain containers are accepted (weights-only loading); a file "
            "that needs arbitrary code to load is refused on purpose."
        ) from None


class Checkpoints:
    """The checkpoints of one run directory (``RUN/checkpoints``)."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir) / "checkpoints"

    def _all(self) -> list[tuple[int, Path]]:
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.dir.iterdir() if (m := _NAME.match(p.name))]
        return sorted(found, reverse=True)

    def save(self, payload: dict) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(".ckpt-*.tmp*"):  # left by a killed writer (we hold the lock)
            stale.unlink(missing_ok=True)
        existing = self._all()
        seq = existing[0][0] + 1 if existing else 1
        data = to_bytes(payload)
        path = self.dir / f"ckpt-{seq:06d}.pt"
        atomic_write(path, data)
        atomic_write(path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest().encode())
        for _, old in existing[KEEP - 1:]:
            old.with_suffix(".sha256").unlink(missing_ok=True)
            old.unlink(missing_ok=True)
        kill_point("save")
        return path

    def load_latest(self) -> dict | None:
        """The newest checkpoint whose checksum matches; None when there is none at all."""
        candidates = self._all()
        for _, path in candidates:
            problem = self._verify(path)
            if problem is None:
                return load_weights(path)
            warnings.warn(
                f"checkpoint {path.name} is unusable ({problem}); falling back to an older one.",
                stacklevel=2,
            )
        if candidates:
            raise FitnetsError(
                f"no usable checkpoint in {self.dir}: every one failed its checksum. Start the "
                "run again without --resume (into a new directory)."
            )
        return None

    @staticmethod
    def _verify(path: Path) -> str | None:
        side = path.with_suffix(".sha256")
        if not side.is_file():
            return "its checksum file is missing: the write was interrupted"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != side.read_text().strip():
            return "checksum mismatch: the file is truncated or corrupted"
        return None
