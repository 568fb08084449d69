"""Linux process checks shared by tools/orphan_check.py and tests/test_ddp.py: which
processes a torchrun agent started, whether they still run, waiting for them to go."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def state(pid: int) -> str | None:
    """A process's state letter (R, S, T ...); None once it has exited (a zombie, exited
    but not yet reaped, included)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    letter = stat.rsplit(")", 1)[1].split()[0]
    return None if letter in ("Z", "X") else letter


def alive(pid: int) -> bool:
    return state(pid) is not None


def workers(agent: int, name: bytes = b"fitnets") -> list[int]:
    """The processes whose parent is ``agent`` and whose command line holds ``name``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmd = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == agent and name in cmd:
            found.append(int(stat.parent.name))
    return sorted(found)


def wait_gone(pids: list[int], limit: float) -> tuple[list[int], float]:
    """The pids still running after up to ``limit`` seconds, and the seconds waited."""
    t0 = time.monotonic()
    while any(state(p) for p in pids) and time.monotonic() - t0 < limit:
        time.sleep(0.02)
    return [p for p in pids if state(p)], time.monotonic() - t0


def kill_leftovers(pids: list[int]) -> None:
    """SIGKILL whichever of ``pids`` still run (a failed check must not leave them behind)."""
    for p in pids:
        if state(p):
            os.kill(p, signal.SIGKILL)
