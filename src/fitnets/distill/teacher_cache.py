"""The teacher's outputs on the training set, computed once and looked up per batch: a bank
of every view augmentation can show.

A view is an image's translation offsets and flip (``fitnets.data.augment.view_index``).
The bank holds the teacher's output for every training image in every view: flips (1 or 2)
x (2 pad + 1)^2 offsets, rows ``[b*N, (b+1)*N)`` for bank view ``b``. Without translations
that is 1 view, or 2 with flips (the images as they are, then mirrored). Each view is made
by the crop training uses (``augment.crop``), so the bank's teacher sees the inputs a run's
teacher would; the outputs are stored in the dtype the teacher produces under the run's
autocast (bf16 under bf16 autocast, fp32 otherwise), so a lookup equals a recomputation up
to the batch the kernels saw. A run's augmentation draws do not change: each run keeps its
own, and finds every view it draws in the bank.

``disk`` keeps the bank in a memory-mapped file named by a hash of everything it depends on
(teacher weights, preprocessed training inputs, layer, pad, flips, the translations' fill,
precision, layout, torch), with a JSON sidecar (shape, dtype, key, sha256) checked on
reuse. It is written chunk by chunk into a ``.part`` file whose progress a ``.part.json``
records, so a killed build continues where it stopped; complete, it is renamed into place.
Under torchrun each rank computes a share of every chunk and each machine's local rank 0
writes.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from fitnets.checkpoint import atomic_write
from fitnets.data.augment import apply_view, view_count
from fitnets.distributed import Dist
from fitnets.errors import FitnetsError
from fitnets.perf import Perf

MEMORY_LIMIT = 2 * 1024**3  # auto: bigger banks go to disk
FORMAT = 1  # the sidecar's format


@dataclass
class TeacherCache:
    """``store`` rows ``[b*N, (b+1)*N)`` hold bank view ``b`` (augmentation's view ``v`` is
    bank view ``v``, or ``v // 2`` without flips); read per batch by
    ``fitnets.distill.teacher.cached``."""

    store: torch.Tensor
    n: int
    path: Path | None = None
    pad: int = 0
    flips: bool = True

    @property
    def views(self) -> int:
        return len(self.store) // self.n


def pack_topk(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` largest logits of each row (last dimension) and their indices, packed into
    one fp32 tensor (..., 2k): values, then indices (exact as floats below 2^24), so that a
    bank of them is one tensor like any other."""
    values, ids = logits.float().topk(k, dim=-1)
    return torch.cat([values, ids.float()], dim=-1)


def unpack_topk(packed: torch.Tensor, outputs: int) -> torch.Tensor:
    """Dense logits (..., ``outputs``) from :func:`pack_topk`'s rows: the kept values in
    their places, -inf elsewhere, so a softmax of them is the teacher's distribution
    renormalised over its top k (probability 0 for every other output)."""
    k = packed.shape[-1] // 2
    dense = torch.full((*packed.shape[:-1], outputs), float("-inf"), dtype=packed.dtype,
                       device=packed.device)
    return dense.scatter_(-1, packed[..., k:].long(), packed[..., :k])


def cache_mode(mode: str, augment_pad: int = 0) -> str | None:
    """memory/disk/auto, or None (off), for the config value ``mode``. Translations
    (``augment_pad``) are fine: the bank holds every view."""
    return None if mode == "off" else mode


def cache_root() -> Path:
    env = os.environ.get("FITNETS_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "fitnets"
    return base / "teacher"


def cache_key(teacher: torch.nn.Module, x: torch.Tensor, what: str, views: int,
              perf: Perf, pad: int = 0, flips: bool | None = None, fill: str = "zeros") -> str:
    """A hash of the teacher's weights, the preprocessed training inputs (which carry the
    data config and preprocessing), the layer, the views (pad, flips and what translations
    fill in) and the precision/layout. Zero-filled banks keep the keys they had before the
    fill was a choice (banks already on disk stay valid)."""
    h = hashlib.sha256()
    for name, t in sorted(teacher.state_dict().items()):
        h.update(name.encode())
        # reshape: a 0-d buffer (batch norm's num_batches_tracked) cannot be viewed as bytes
        h.update(t.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(x.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps([what, views, pad, flips, perf.precision, perf.channels_last,
                         list(x.shape), torch.__version__,
                         *([fill] if pad and fill != "zeros" else [])]).encode())
    return h.hexdigest()[:32]


def sidecar(path: Path) -> Path:
    """The JSON that describes a complete bank file."""
    return path.with_suffix(".json")


def partial(path: Path) -> tuple[Path, Path]:
    """The file a bank is built in and the JSON that records how far the build got."""
    return path.with_suffix(".part"), path.with_suffix(".part.json")


def available_bytes(path: Path | None, device: torch.device) -> int:
    """Room for a bank: free space on ``path``'s file system, or free memory on ``device``
    (``path`` None)."""
    if path is not None:
        p = path.parent
        while not p.exists() and p != p.parent:
            p = p.parent
        return shutil.disk_usage(p).free
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown: assume it fits


def build_teacher_cache(fn: Callable[[torch.Tensor], torch.Tensor], teacher: torch.nn.Module,
                        x: torch.Tensor, *, what: str, flips: bool, mode: str, perf: Perf,
                        batch_size: int, say: Callable[[str], None],
                        dist: Dist | None = None, pad: int = 0,
                        epochs: int | None = None, fill: str = "zeros") -> TeacherCache | None:
    """Run ``fn`` (the teacher up to ``what``) over every view of ``x``: the bank.

    ``mode``: memory, disk, or auto: without translations memory (disk above
    ``MEMORY_LIMIT``); with translations (``pad``) the bank on disk when it is there, else
    one built when it costs no more teacher forwards than ``epochs`` epochs computing them
    inline would, else None (after saying why and how to build a shared one). None too when
    the bank does not fit (memory or disk): the caller then computes the outputs inline.

    Under torchrun (``dist``) the work is split: each rank computes its share of every chunk
    of rows and the shares are gathered, so the bank is computed once for the whole job and
    every rank ends with all of it. A disk bank is written by each machine's local rank 0;
    the other ranks of that machine map its file.
    """
    dist = dist or Dist()
    n, views = len(x), view_count(pad, flips)
    with torch.inference_mode(), perf.autocast():
        probe = fn(perf.layout(x[:1]))
    shape, dtype = tuple(probe.shape[1:]), probe.dtype
    total = views * n
    nbytes = total * probe[0].numel() * probe.element_size()
    dname = str(dtype).removeprefix("torch.")
    size = f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"
    kinds = (f" ({2 if flips else 1} flip(s) x {(2 * pad + 1) ** 2} shifts"
             f"{', reflected' if fill == 'reflect' else ''})" if pad else "")
    writer = dist.local_rank == 0
    unit = "images" if x.is_floating_point() else "blocks"  # token ids: blocks of text
    path = None
    if mode == "disk" or (mode == "auto" and (pad or nbytes > MEMORY_LIMIT)):
        path = cache_root() / f"{cache_key(teacher, x, what, views, perf, pad, flips, fill)}.bin"
    meta = {"format": FORMAT, "key": path.stem if path else None, "what": what, "pad": pad,
            "flips": bool(flips), "views": views, "images": n,
            "shape": [total, *shape], "dtype": dname, "bytes": nbytes,
            **({"fill": fill} if pad and fill != "zeros" else {})}
    have = path is not None and dist.all_true(_complete(path, meta, writer, say))
    if have:
        say(f"teacher cache: reusing {what} outputs ({views} view(s){kinds}, {size}) in {path}")
        return TeacherCache(_mapped(path, total, shape, dtype), n, path, pad, bool(flips))
    if mode == "auto":
        if pad and (epochs is None or views > epochs):
            run = (f"this run's {epochs} epoch(s) with the teacher ({epochs * n:,} forwards)"
                   if epochs is not None else "this run (its epochs are not known here)")
            say(f"teacher cache: {what} computed inline: a bank of every view ({views} views"
                f"{kinds} x {n} {unit} = {total:,} teacher forwards, {size}) costs more than "
                f"{run}. To build one bank shared by every run with this teacher and data, "
                "run once with perf.teacher_cache=disk; later runs with auto reuse it.")
            return None
        mode = "memory" if nbytes <= MEMORY_LIMIT else "disk"
    if mode == "memory":
        path = None
    room = available_bytes(path, x.device)
    if path is not None and writer:
        part = partial(path)[0]
        room += part.stat().st_size if part.exists() else 0
    # disk: leave a margin (1 GiB, less on a small disk); memory: half, for the training
    fits = nbytes <= (room - min(2**30, room // 10) if path is not None else room // 2)
    if not dist.all_true(fits or (path is not None and not writer)):
        where = f"on disk in {path.parent}" if path else f"in memory on {x.device}"
        say(f"teacher cache: a bank of {what} ({views} view(s){kinds} x {n} {unit} x "
            f"{list(shape)} {dname} = {size}) does not fit {where} ({room / 2**20:.0f} MiB "
            "free); computing it inline")
        return None
    where = f" in {path}" if path else " in memory"
    shared = f", shared by {dist.world} processes" if dist.enabled else ""
    forwards = f": {total:,} teacher forwards" if pad else ""
    say(f"teacher cache: {views} view(s){kinds} x {n} {unit} x {list(shape)} {dname} = "
        f"{size}{where}; computing it once{shared}{forwards}")
    if path is None:
        store = torch.empty((total, *shape), dtype=dtype, device=x.device)

        def write(at: int, rows: torch.Tensor) -> None:
            store[at:at + len(rows)] = rows

        _fill(write, fn, x, pad, flips, perf, batch_size, dist, probe, 0, what, fill)
        return TeacherCache(store, n, None, pad, bool(flips))
    part, progress = partial(path)
    start = _resume_point(path, meta) if writer else total
    start = dist.min(start)  # each machine's writer may have got elsewhere: the least
    if start:
        say(f"teacher cache: resuming the build of {part} at row {start:,} of {total:,} "
            f"({100 * start / total:.0f}% done)")
    if writer:
        with open(part, "r+b") as f:
            row_bytes = nbytes // total

            def write(at: int, rows: torch.Tensor) -> None:
                data = rows.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()
                os.pwrite(f.fileno(), data, at * row_bytes)
                f.flush()
                os.fsync(f.fileno())  # the rows are on disk before the progress says so
                atomic_write(progress, json.dumps({**meta, "done": at + len(rows)}).encode())

            _fill(write, fn, x, pad, flips, perf, batch_size, dist, probe, start, what, fill)
        digest = _sha256(part)
        atomic_write(sidecar(path), json.dumps(
            {**meta, "sha256": digest, "torch": torch.__version__,
             "created": datetime.datetime.now(datetime.UTC).isoformat(
                 timespec="seconds")}, indent=1).encode())
        os.replace(part, path)  # complete files only: a reader never sees a half-written one
        progress.unlink(missing_ok=True)
    else:
        _fill(None, fn, x, pad, flips, perf, batch_size, dist, probe, start, what, fill)
    dist.barrier()  # this machine's writer has put the file in place
    if not path.exists():
        raise FitnetsError(
            f"teacher cache: {path} was not written by this machine's local rank 0; the "
            "processes of one machine must share FITNETS_CACHE."
        )
    return TeacherCache(_mapped(path, total, shape, dtype), n, path, pad, bool(flips))


def _fill(write: Callable[[int, torch.Tensor], None] | None, fn, x: torch.Tensor, pad: int,
          flips: bool, perf: Perf, batch_size: int, dist: Dist, probe: torch.Tensor,
          start: int, what: str, fill: str = "zeros") -> None:
    """Rows [b*N, (b+1)*N) = ``fn`` of bank view b of ``x``, from row ``start`` on, chunk by
    chunk: each rank computes its share of a chunk, the shares are gathered and ``write``
    gets them (None: compute and send only)."""
    n, views = len(x), view_count(pad, flips)
    chunk = batch_size * dist.world * 4  # rows per gathering round
    total = views * n
    with torch.inference_mode(), perf.autocast(), tqdm(
            total=total, initial=start, unit="img", desc=f"teacher bank {what}",
            leave=False, dynamic_ncols=True, disable=None if dist.is_main else True) as bar:
        for b in range(start // n, views):
            view = b if flips else 2 * b  # augmentation's view index of bank view b
            for c0 in range(start - b * n if b == start // n else 0, n, chunk):
                c1 = min(c0 + chunk, n)
                lo, hi = dist.rows(c1 - c0)
                mine = x[c0 + lo:c0 + hi]
                if pad or view:  # the crop training uses: the same inputs, bit for bit
                    mine = apply_view(mine, view, pad, fill)
                part = torch.cat([fn(perf.layout(mine[i:i + batch_size]))
                                  for i in range(0, len(mine), batch_size)] or [probe[:0]])
                rows = dist.gather_rows(part, c1 - c0)
                if write is not None:
                    write(b * n + c0, rows)
                bar.update(c1 - c0)


def _complete(path: Path, meta: dict, verify: bool, say: Callable[[str], None]) -> bool:
    """Whether ``path`` is a complete bank as ``meta`` describes; ``verify``: also check its
    sha256 (and remove it when wrong, so that it is rebuilt)."""
    side = sidecar(path)
    if not (path.exists() and side.exists()):
        return False
    try:
        got = json.loads(side.read_text())
    except (OSError, ValueError):
        got = None
    bad = None
    if not isinstance(got, dict) or any(got.get(k) != v for k, v in meta.items()):
        bad = "its sidecar does not describe this bank (shape, dtype or key differ)"
    elif path.stat().st_size != meta["bytes"]:
        bad = f"its size is {path.stat().st_size} bytes, not {meta['bytes']}"
    elif verify and _sha256(path) != got.get("sha256"):
        bad = "checksum mismatch (sha256 differs from its sidecar's)"
    if bad is None:
        return True
    if verify:
        say(f"teacher cache: {path}: {bad}; rebuilding it")
        path.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
    return False


def _resume_point(path: Path, meta: dict) -> int:
    """The rows a killed build of ``path`` completed (its ``.part`` file kept, when its
    progress matches ``meta``), else 0 with a fresh ``.part`` file."""
    part, progress = partial(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        got = json.loads(progress.read_text())
    except (OSError, ValueError):
        got = None
    if (isinstance(got, dict) and all(got.get(k) == v for k, v in meta.items())
            and part.exists() and part.stat().st_size == meta["bytes"]):
        return max(0, min(int(got.get("done", 0)), meta["shape"][0]))
    with open(part, "wb") as f:
        f.truncate(meta["bytes"])
    atomic_write(progress, json.dumps({**meta, "done": 0}).encode())
    return 0


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return h.hexdigest()


def _mapped(path: Path, total: int, shape: tuple, dtype: torch.dtype,
            shared: bool = False) -> torch.Tensor:
    numel = total * int(torch.Size(shape).numel())
    return torch.from_file(str(path), shared=shared, size=numel, dtype=dtype).view(total, *shape)
