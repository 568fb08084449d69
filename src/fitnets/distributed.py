"""Several processes, one run: torchrun's process group, batch shards, reductions, who writes.

``torchrun --nproc-per-node N -m fitnets distill ...`` starts N copies of the same command
with RANK, WORLD_SIZE and LOCAL_RANK set. Every rank holds the whole dataset and the frozen
teacher, draws the same permutation and the same augmentation from the shared seeded
generator (so all ranks stay in lockstep, and a checkpoint's generator state is valid for
any number of processes), and trains on its own slice of each global batch. The trainable
module is wrapped in DistributedDataParallel; rank 0 alone writes files. One process
(WORLD_SIZE unset or 1) gets ``Dist()``, whose methods all do nothing.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as td
from torch import nn

from fitnets.config import Config, DistConfig
from fitnets.data.memory import rank_rows
from fitnets.errors import FitnetsError

# The process that started this one (torchrun's agent, under torchrun), taken at import, as
# early as this module can: watch_agent() compares it with the parent of the moment.
_PARENT = os.getppid()


@dataclass
class Dist:
    """This process's place in the job; the defaults describe a single process."""

    rank: int = 0
    world: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # we created the process group, so we destroy it
    local_rank: int = 0  # the rank on this machine (LOCAL_RANK)
    sync_bn: str | bool = "auto"  # dist.sync_bn

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def syncs_batchnorm(self) -> bool:
        """Whether batch norms are synchronised (dist.sync_bn not false, on GPUs)."""
        return self.enabled and self.sync_bn is not False and self.device.type == "cuda"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            td.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled: checkpoints, paths, flags)."""
        if not self.enabled:
            return obj
        box = [obj]
        td.broadcast_object_list(box, src=0, device=self._comm_device())
        return box[0]

    def shard(self, x: torch.Tensor, y: torch.Tensor, *extra: torch.Tensor | None) -> tuple:
        """This rank's contiguous slice of a global batch (and of ``extra`` per-image tensors,
        e.g. batch indices and flip mask; None passes through), then its share of the batch.

        The share weighs the loss so that DDP's gradient average equals the gradient of the
        global batch mean even when the last batch does not split evenly. A rank left with
        no image (last batch smaller than the world) trains on one image with weight 0.
        """
        if not self.enabled:
            return (x, y, *extra, 1.0)
        n = len(y)
        lo, hi = self.rows(n)
        share = (hi - lo) / n
        if hi == lo:
            lo, hi = 0, 1
        return (*(None if t is None else t[lo:hi] for t in (x, y, *extra)), share)

    def rows(self, n: int, rank: int | None = None) -> tuple[int, int]:
        """This rank's (or ``rank``'s) contiguous share [lo, hi) of ``n`` rows (all of them
        in one process); shares differ by at most one row."""
        return rank_rows(n, self.rank if rank is None else rank, self.world)

    def weigh(self, loss: torch.Tensor, share: float) -> torch.Tensor:
        """The loss to back-propagate: DDP averages over ranks, so scale by share * world."""
        return loss if not self.enabled else loss * (share * self.world)

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        """Sum each value over the ranks (every rank passes the same keys)."""
        if not self.enabled or not values:
            return values
        keys = list(values)  # the same order on every rank: the same code made them
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64,
                         device=self._comm_device())
        td.all_reduce(t)
        return dict(zip(keys, t.tolist()))

    def all_true(self, flag: bool) -> bool:
        """True when ``flag`` holds on every rank."""
        return flag if not self.enabled else self.sum({"f": float(flag)})["f"] == self.world

    def min(self, value: int) -> int:
        """The smallest ``value`` over the ranks (e.g. how far a resumed build got)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device())
        td.all_reduce(t, op=td.ReduceOp.MIN)
        return int(t.item())

    def gather_rows(self, part: torch.Tensor, total: int) -> torch.Tensor:
        """The ranks' ``part``s (their ``rows(total)`` shares, in rank order) as one tensor
        of ``total`` rows on every rank. Sent as bytes, so any dtype goes through gloo."""
        if not self.enabled:
            return part
        size = -(-total // self.world)  # the largest share; smaller ones are padded
        pad = part.new_zeros((size, *part.shape[1:]))
        pad[:len(part)] = part
        flat = pad.contiguous().view(torch.uint8).to(self._comm_device())
        bufs = [torch.empty_like(flat) for _ in range(self.world)]
        td.all_gather(bufs, flat)
        rows = [b.to(part.device).view(part.dtype).view(size, *part.shape[1:])
                for b in bufs]
        shares = [self.rows(total, k) for k in range(self.world)]
        return torch.cat([r[:hi - lo] for r, (lo, hi) in zip(rows, shares)])

    def wrap(self, module: nn.Module, trained: Iterable[nn.Parameter]) -> nn.Module:
        """``module`` in DistributedDataParallel (itself in a single process).

        Stage 1's module holds the whole student but its forward stops at the guided layer,
        so the layers above get no gradient: DDP must then look for unused parameters.
        """
        if not self.enabled:
            return module
        module = self.sync_batchnorm(module)
        keep = {id(p) for p in trained}
        unused = any(p.requires_grad and id(p) not in keep for p in module.parameters())
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids,
                                                   find_unused_parameters=unused)

    def sync_batchnorm(self, module: nn.Module) -> nn.Module:
        """``module`` with its batch norms synchronised over the ranks when dist.sync_bn
        asks for it (auto: on GPUs). The layers are swapped in place and keep their
        parameters and buffers, so optimisers and checkpoints are unaffected."""
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
        if self.sync_bn is False or not self.enabled or not has_bn:
            return module
        if not self.syncs_batchnorm:
            if self.sync_bn is True:
                raise FitnetsError(
                    "dist.sync_bn=true needs GPUs: torch's SyncBatchNorm runs on CUDA only. "
                    "On CPU processes use dist.sync_bn=auto or false (each rank's batch norm "
                    "then normalises with its own slice of the global batch).")
            return module
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)

    def close(self) -> None:
        if self.owns_group and td.is_initialized():
            td.destroy_process_group()

    def _comm_device(self) -> torch.device:
        return self.device if td.get_backend() == "nccl" else torch.device("cpu")


def setup(cfg: DistConfig, device: torch.device) -> Dist:
    """Join torchrun's process group when WORLD_SIZE > 1; GPUs: device cuda:LOCAL_RANK.
    Under torchrun the process ends when its agent does (watch_agent)."""
    if os.environ.get("TORCHELASTIC_RUN_ID") is not None:  # torchrun's agent started us
        watch_agent()  # first: a worker must not outlive its agent (even the only one)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=device)
    if not td.is_available():
        raise FitnetsError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed.")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = cfg.backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise FitnetsError(f"dist.backend=nccl needs GPUs but the device is {device}; use "
                           "dist.backend=gloo (or auto).")
    owns = not td.is_initialized()
    if owns:
        td.init_process_group(backend=backend, **_restart_store())
        global _STARTED_GROUP
        _STARTED_GROUP = True
    return Dist(rank=td.get_rank(), world=td.get_world_size(), device=device, owns_group=owns,
                local_rank=local, sync_bn=cfg.sync_bn)


_STARTED_GROUP = False  # this process created a process group (setup), see leave()
_WATCHING = False  # watch_agent() has run in this process


def watch_agent(parent: int | None = None, *, deathsig: bool = True,
                period: float = 1.0) -> bool:
    """Make this process end when ``parent`` (default: the process that started it, i.e.
    torchrun's agent) is gone; False when it was already armed.

    torchrun starts each worker in a session of its own, so a SIGKILL of the agent's process
    group (or an OOM kill of the agent) does not reach the workers: they went on and finished
    the run, or sat in a collective for a quarter of an hour holding their memory (issue 31).
    On Linux the kernel kills this process (PR_SET_PDEATHSIG, SIGKILL) the moment its parent
    exits; elsewhere, and as a second line, a daemon thread compares os.getppid() with
    ``parent`` every ``period`` seconds and ends the process when it changed (the orphan was
    adopted by init or a subreaper). The thread needs the GIL, which torch's collectives and
    waits release. Either way the process ends as abruptly as a SIGKILL: every file a run
    writes is written atomically (checkpoints also with a checksum) and a resume truncates
    metrics.jsonl to the checkpoint, so --resume continues the run exactly.

    The kernel's "parent" is the thread that started this process: torchrun's agent starts
    its workers from its main thread, which lives as long as the agent. ``deathsig=False``
    leaves only the thread (for a parent that starts processes from short-lived threads).
    """
    global _WATCHING
    if _WATCHING:
        return False
    _WATCHING = True
    parent = _PARENT if parent is None else parent
    if deathsig:
        _kill_with_parent()
    if os.getppid() != parent:  # gone before the kernel was told
        _parent_gone(parent)
    threading.Thread(target=_poll_parent, args=(parent, period), daemon=True,
                     name="fitnets-agent-watch").start()
    return True


def _kill_with_parent() -> bool:
    """prctl(PR_SET_PDEATHSIG, SIGKILL) through libc; False where there is none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def _poll_parent(parent: int, period: float) -> None:
    while os.getppid() == parent:
        time.sleep(period)
    _parent_gone(parent)


def _parent_gone(parent: int) -> None:
    """Say why (from a thread of its own: a pipe nobody reads must not hold the exit up),
    then end the process without cleanup, as the kernel's SIGKILL would."""
    msg = (f"fitnets: rank {os.environ.get('RANK', '?')} (pid {os.getpid()}): its torchrun "
           f"agent (pid {parent}) is gone; exiting. Continue the run with --resume RUN_DIR.\n")

    def say() -> None:
        try:
            os.write(2, msg.encode())
        except OSError:
            pass

    t = threading.Thread(target=say, daemon=True)
    t.start()
    t.join(0.5)
    os._exit(1)


def leave(code: int) -> None:
    """End a command-line process that joined a process group, skipping the interpreter's
    finalisation; return (doing nothing) in a process that never did.

    DistributedDataParallel keeps the process group alive after destroy_process_group
    (measured on torch 2.13: gloo's worker threads still run after the DDP module and its
    parameters are freed and collected), so those threads outlive ``main``. A worker thread
    that drops its last collective (it holds tensors owned by Python objects) while the
    interpreter is finalising must take the GIL, is made to exit by Python, and the forced
    unwind through the work's destructor calls std::terminate: the rank dies of SIGABRT
    ("terminate called without an active exception") after a run that finished, and
    torchrun reports the job failed. Seen in 4 of 171 two-process jobs on 2 CPU cores
    (benchmarks/results/ddp-exit.md); the gdb backtrace is in ProcessGroupGloo::runLoop ->
    ~AsyncBarrierWork -> TensorImpl::decref_pyobject -> take_gil -> pthread_exit. torch's
    own fix (an atexit destroy, pytorch#179291) was abandoned, and destroying does not stop
    the threads of a group that something still holds. Everything the run writes is
    closed and flushed by then.
    """
    if not _STARTED_GROUP:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _restart_store() -> dict:
    """After an elastic restart, the process group's keys in a namespace of their own.

    torchrun's agent keeps one TCPStore for the whole job and hands it to every attempt's
    workers (TORCHELASTIC_USE_AGENT_STORE=True), but ``init_process_group`` does not prefix
    its keys by attempt. The restarted workers then read the killed workers' gloo addresses
    and the first attempt's barrier counters from that store, and their init is refused
    ("connectFullMesh failed ... Connection refused") or waits forever (torch 2.13, both
    seen). A prefix per restart count gives each attempt a clean namespace. The first
    attempt, and launchers that start a new store per attempt, keep the default env:// init.
    """
    count = restart_count()
    if count == 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    store = td.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                        is_master=False)
    return {"store": td.PrefixStore(f"fitnets/attempt_{count}", store),
            "rank": int(os.environ["RANK"]), "world_size": int(os.environ["WORLD_SIZE"])}


def check_batch(cfg: Config, dist: Dist) -> None:
    b = cfg.data.batch_size
    if dist.enabled and b % dist.world:
        raise FitnetsError(
            f"data.batch_size={b} is the global batch and must split evenly over the "
            f"{dist.world} processes; use a multiple of {dist.world} (e.g. "
            f"{b - b % dist.world or dist.world})."
        )


def scale_lr(cfg: Config, dist: Dist) -> Config:
    """``cfg`` with every learning rate times the world size when dist.scale_lr is set."""
    if not (dist.enabled and cfg.dist.scale_lr):
        return cfg

    def stage(s):
        optim = dataclasses.replace(s.optim, lr=s.optim.lr * dist.world)
        return dataclasses.replace(s, optim=optim)

    return dataclasses.replace(cfg, train=stage(cfg.train),
                               hints=dataclasses.replace(cfg.hints, stage=stage(cfg.hints.stage)))


def describe(cfg: Config, dist: Dist, stages: list) -> str:
    """The start-of-run line: global batch = processes x per-rank batch, and the lr of each
    stage (``stages``: the run's StagePlans)."""
    b = cfg.data.batch_size
    lrs = {p.label.split(":")[0]: f"{p.cfg.optim.lr:g}" for p in stages}
    lr = " / ".join(f"{v} ({k})" for k, v in lrs.items()) if len(lrs) > 1 \
        else next(iter(lrs.values()), "-")
    how = f"x{dist.world} by dist.scale_lr" if cfg.dist.scale_lr else "as in the recipe"
    bn = "synchronised (SyncBatchNorm)" if dist.syncs_batchnorm else "per rank"
    line = (f"{dist.world} processes ({td.get_backend()}): global batch {b} = {dist.world} x "
            f"{b // dist.world}, lr {lr} ({how}); batch-norm statistics, if any: {bn}")
    advice = elastic_advice()
    return f"{line}\n{advice}" if advice else line


def elastic_advice() -> str | None:
    """A warning for the one set-up whose restarts our per-attempt prefix cannot make safe.

    Each node's agent counts only the restarts its own workers caused (pytorch#108158), so
    on several nodes sharing the agent's store the attempt prefixes of _restart_store can
    differ between nodes. torch's own switch gives every attempt a fresh store instead.
    """
    env = os.environ
    if (int(env.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) > 0
            and int(env.get("GROUP_WORLD_SIZE", "1") or 1) > 1
            and env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"):
        return ("warning: elastic restarts on several nodes with torchrun's shared store: "
                "launch torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its "
                "environment on every node, or restarted workers may wait forever in "
                "init_process_group (pytorch#135712).")
    return None


def restart_count() -> int:
    """How often torchrun has restarted the workers (elastic restarts); 0 at first."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
