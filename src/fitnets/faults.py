"""Fault injection, for the reliability tests only: kill this process at a chosen point.

Tests switch it on through the environment of the process they start; it is read once, at
import. Unset (every production run), ``ARMED`` is False and the callers skip the hook:
a production step tests one module-level flag and calls nothing.

- ``FITNETS_TEST_KILL_AT=EVENT:N[:STOP]``: SIGKILL (or SIGSTOP, to freeze the process while
  it holds its run directory's lock) at the N-th EVENT this process reaches:
  ``step`` after the N-th optimiser step, ``save`` after the N-th complete checkpoint (file
  and checksum), ``write`` halfway through the N-th atomic file write.
- ``FITNETS_TEST_KILL=RANK:N``: rank RANK SIGKILLs itself after its N-th checkpoint, in the
  first attempt of a torchrun job only (standing in for a crashed worker or node).

Used by tests/test_reliability.py, tests/test_ddp.py and tools/kill_resume.py.
"""

from __future__ import annotations

import os
import signal
import sys

_KILL_AT = os.environ.get("FITNETS_TEST_KILL_AT", "")
_KILL_RANK = os.environ.get("FITNETS_TEST_KILL", "")
ARMED = bool(_KILL_AT or _KILL_RANK)
_counts: dict[str, int] = {}


def reached(event: str, rank: int = 0) -> None:
    """Count one ``event`` (step | save | write | checkpoint) and kill when it is the one."""
    _counts[event] = _counts.get(event, 0) + 1
    if _KILL_AT.startswith(event + ":"):
        _, n, *how = _KILL_AT.split(":")
        if _counts[event] == int(n):
            _die(signal.SIGSTOP if how == ["STOP"] else signal.SIGKILL)
    if event == "checkpoint" and _KILL_RANK and _first_attempt():
        who, n = (int(v) for v in _KILL_RANK.split(":"))
        if rank == who and _counts[event] == n:
            _die(signal.SIGKILL)


def _first_attempt() -> bool:
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) == 0


def _die(sig: int) -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), sig)
