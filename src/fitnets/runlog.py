"""A run's metrics log (``metrics.jsonl``), the sinks fed the same records (tensorboard, an
experiment tracker) and its messages."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from fitnets.errors import FitnetsError
from fitnets.tracking import open_sink


class RunLog:
    """The metrics log (``metrics.jsonl``, the source of truth), the sinks fed the same
    records (tensorboard, an experiment tracker; see fitnets/tracking.py), messages."""

    def __init__(self, run_dir: Path, verbose: bool = True, tensorboard: bool = False,
                 writes: bool = True, tracking: str = "none", config: dict | None = None):
        self.run_dir = Path(run_dir)
        self.metrics = self.run_dir / "metrics.jsonl"
        self.verbose = verbose
        self.writes = writes  # rank 0 alone writes
        self.tensorboard = tensorboard_writer(self.run_dir) if tensorboard and writes else None
        self._tracking, self._config = (tracking if writes else "none"), config or {}
        self._sink = None  # opened at the first record, after a resume's truncation

    def log(self, record: dict) -> None:
        if not self.writes:
            return
        try:
            with open(self.metrics, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
        except OSError as e:
            raise FitnetsError(f"cannot append to '{self.metrics}': {e.strerror or e}. The last "
                               "checkpoint is intact; free some space, then continue the run "
                               "with --resume RUN_DIR.") from None
        if self.tensorboard is not None:
            self.tensorboard(record)
        if self._tracking != "none":
            if self._sink is None:
                self._sink = open_sink(self._tracking, self.run_dir, self._config,
                                       self.lines() - 1)
            self._sink.log(record)

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def lines(self) -> int:
        if not self.metrics.exists():
            return 0
        with open(self.metrics) as f:
            return sum(1 for _ in f)

    def truncate(self, lines: int) -> None:
        """Drop records written after the checkpoint we resume from."""
        if not self.writes or not self.metrics.exists():
            return
        with open(self.metrics) as f:
            kept = f.readlines()[:lines]
        with open(self.metrics, "w") as f:
            f.writelines(kept)

    def say(self, text: str) -> None:
        if self.verbose:
            tqdm.write(text)


def tensorboard_writer(run_dir: Path) -> Callable[[dict], None]:
    """A metrics hook writing a record's numbers as scalars ``<stage>[:pair]/<key>`` at
    step = epoch, to ``run_dir/tensorboard``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise FitnetsError("tensorboard=true needs the tensorboard package: pip install "
                           "'fitnets[tensorboard]' (or set tensorboard=false).") from None
    writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def write(record: dict) -> None:
        stage = record["stage"] + (f":{record['pair']}" if "pair" in record else "")
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                writer.add_scalar(f"{stage}/{key}", value, record["epoch"])
        writer.flush()

    return write
