"""Atomic, checksummed checkpoints; weights-only loading into a model.

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
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fitnets import faults
from fitnets.errors import FitnetsError

_NAME = re.compile(r"^ckpt-(\d{6})\.pt$")
KEEP = 2




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
    if faults.ARMED:
        faults.reached("write")
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


def load_safetensors(path: Path) -> dict:
    """A ``.safetensors`` file as a state dict (a format that cannot hold code)."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise FitnetsError(f"'{path}' is a safetensors file; install safetensors (pip install "
                           "safetensors) to read it.") from None
    if not path.is_file():
        raise FitnetsError(f"weights file '{path}' does not exist.")
    try:
        return load_file(str(path))
    except Exception as e:  # SafetensorError for a damaged or foreign file
        raise FitnetsError(f"cannot load '{path}' as safetensors: "
                           f"{str(e).splitlines()[0][:300]}") from None


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
        if faults.ARMED:
            faults.reached("save")
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


def load_into(model: nn.Module, weights: str | Path, name: str,
              preprocess_kind: str | None = None) -> None:
    """Load a run directory's ``model.pt`` (or a state-dict file) into ``model``.

    ``name`` names the model in errors. When the file records the preprocessing it was
    trained with and ``preprocess_kind`` is given, the two must agree.
    """
    path = Path(weights)
    if path.is_dir():  # a run directory, or a timm / Hugging Face style folder
        found = [path / n for n in ("model.pt", "model.safetensors") if (path / n).is_file()]
        path = found[0] if found else path / "model.pt"
    blob = load_safetensors(path) if path.suffix == ".safetensors" else load_weights(path)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
    if isinstance(blob, dict) and "preprocess" in blob and preprocess_kind is not None:
        kind = blob["preprocess"].get("kind")
        if kind is not None and kind != preprocess_kind:
            raise FitnetsError(
                f"'{path}' was trained with preprocess '{kind}' but this run uses "
                f"'{preprocess_kind}': set data.preprocess={kind}."
            )
    if not isinstance(state, dict):
        raise FitnetsError(f"'{path}' does not hold a state dict.")
    state = _strip_prefix(state)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in state.items()
              if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise FitnetsError(
            f"the weights in '{path}' do not fit model '{name}'. "
            f"Missing keys: {missing[:10] or 'none'}. "
            f"Unexpected keys: {unexpected[:10] or 'none'}. "
            f"Shape mismatches: {shapes[:5] or 'none'}. Check the model name "
            "(and batchnorm) against the run that produced the weights."
        )
    model.load_state_dict(state)


def _strip_prefix(state: dict) -> dict:
    # DDP and torch.compile wrap names; accept their state dicts unchanged
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state
