"""The teacher's outputs on the training set, computed once and looked up per batch.

Valid only when the teacher sees the same inputs every epoch: no augmentation, or flips
only (then two views are stored: the images as they are and mirrored). The outputs are
stored in the dtype the teacher produces under the run's autocast (bf16 under bf16
autocast, fp32 otherwise), so a lookup equals a recomputation up to the batch size the
kernels saw. ``disk`` keeps them in a file keyed by a hash of everything they depend on,
so later runs with the same teacher, data, preprocessing, layer and precision reuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fitnets.distributed import Dist
from fitnets.errors import FitnetsError
from fitnets.perf import Perf

MEMORY_LIMIT = 2 * 1024**3  # auto: bigger caches go to disk


@dataclass
class TeacherCache:
    """Rows ``[0, N)`` hold the plain view, rows ``[N, 2N)`` the mirrored one (if any); read
    per batch by ``fitnets.distill.teacher.cached``."""

    store: torch.Tensor
    n: int
    path: Path | None = None


def cache_mode(mode: str, augment_pad: int) -> str | None:
    """memory/disk/None (off) for the config value ``mode``; refuses translations."""
    if mode == "off":
        return None
    if augment_pad > 0:
        if mode == "auto":
            return None
        raise FitnetsError(
            f"perf.teacher_cache={mode} cannot be used with data.augment_pad={augment_pad}: "
            "random translations change the teacher's inputs every epoch, so cached outputs "
            "would be wrong. Use perf.teacher_cache=auto or off, or data.augment_pad=0."
        )
    return mode


def cache_root() -> Path:
    env = os.environ.get("FITNETS_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "fitnets"
    return base / "teacher"


def cache_key(teacher: torch.nn.Module, x: torch.Tensor, what: str, views: int,
              perf: Perf) -> str:
    """A hash of the teacher's weights, the preprocessed training inputs (which carry the
    data config and preprocessing), the layer, the views and the precision/layout."""
    h = hashlib.sha256()
    for name, t in sorted(teacher.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    h.update(x.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    h.update(json.dumps([what, views, perf.precision, perf.channels_last, list(x.shape),
                         torch.__version__]).encode())
    return h.hexdigest()[:32]


def build_teacher_cache(fn: Callable[[torch.Tensor], torch.Tensor], teacher: torch.nn.Module,
                        x: torch.Tensor, *, what: str, flips: bool, mode: str, perf: Perf,
                        batch_size: int, say: Callable[[str], None],
                        dist: Dist | None = None) -> TeacherCache:
    """Run ``fn`` (the teacher up to ``what``) over ``x`` (and its mirror when ``flips``).

    Under torchrun (``dist``) the work is split: each rank computes its share of every chunk
    of rows and the shares are gathered, so the cache is computed once for the whole job and
    every rank ends with all of it. A disk cache is written by each machine's local rank 0;
    the other ranks of that machine map its file.
    """
    dist = dist or Dist()
    n, views = len(x), 2 if flips else 1
    with torch.inference_mode(), perf.autocast():
        probe = fn(perf.layout(x[:1]))
    shape, dtype = tuple(probe.shape[1:]), probe.dtype
    nbytes = views * n * probe[0].numel() * probe.element_size()
    if mode == "auto":
        mode = "memory" if nbytes <= MEMORY_LIMIT else "disk"
    path = None
    if mode == "disk":
        path = cache_root() / f"{cache_key(teacher, x, what, views, perf)}.bin"
    where = f" in {path}" if path else " in memory"
    total = views * n
    have = path is not None and path.exists() and path.stat().st_size == nbytes
    if dist.all_true(have):  # every rank must find it, or all compute it together
        say(f"teacher cache: reusing {what} outputs ({nbytes / 2**20:.1f} MiB){where}")
        return TeacherCache(_mapped(path, total, shape, dtype), n, path)
    shared = f", shared by {dist.world} processes" if dist.enabled else ""
    say(f"teacher cache: {views} view(s) x {n} images x {list(shape)} {str(dtype)[6:]} = "
        f"{nbytes / 2**20:.1f} MiB{where}; computing it once{shared}")
    writes = path is None or dist.local_rank == 0
    store = tmp = None
    if path is None:
        store = torch.empty((total, *shape), dtype=dtype, device=x.device)
    elif writes:  # written straight into a memory-mapped file (it may not fit in memory)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.truncate(nbytes)
        store = _mapped(tmp, total, shape, dtype, shared=True)
    _fill(store, fn, x, views, perf, batch_size, dist, probe)
    if path is not None:
        if writes:
            del store
            os.replace(tmp, path)  # complete files only: a reader never sees a half-written one
        dist.barrier()  # this machine's writer has put the file in place
        if not path.exists():
            raise FitnetsError(
                f"teacher cache: {path} was not written by this machine's local rank 0; the "
                "processes of one machine must share FITNETS_CACHE."
            )
        store = _mapped(path, total, shape, dtype)
    return TeacherCache(store, n, path)


def _fill(store: torch.Tensor | None, fn, x: torch.Tensor, views: int, perf: Perf,
          batch_size: int, dist: Dist, probe: torch.Tensor) -> None:
    """Rows [v*N, (v+1)*N) of ``store`` = ``fn`` of view v of ``x``; each rank computes its
    share of every chunk and the shares are gathered (``store`` None: compute and send only)."""
    n = len(x)
    chunk = batch_size * dist.world * 4  # rows per gathering round
    with torch.inference_mode(), perf.autocast():
        for v in range(views):
            for c0 in range(0, n, chunk):
                c1 = min(c0 + chunk, n)
                lo, hi = dist.rows(c1 - c0)
                mine = x[c0 + lo:c0 + hi]
                if v:
                    mine = mine.flip(3)
                part = torch.cat([fn(perf.layout(mine[i:i + batch_size]))
                                  for i in range(0, len(mine), batch_size)] or [probe[:0]])
                rows = dist.gather_rows(part, c1 - c0)
                if store is not None:
                    store[v * n + c0:v * n + c1] = rows


def _mapped(path: Path, total: int, shape: tuple, dtype: torch.dtype,
            shared: bool = False) -> torch.Tensor:
    numel = total * int(torch.Size(shape).numel())
    return torch.from_file(str(path), shared=shared, size=numel, dtype=dtype).view(total, *shape)
