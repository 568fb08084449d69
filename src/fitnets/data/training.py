"""What a run asks of the data it trains on: the ``TrainingData`` protocol, which data held
in memory (fitnets.data.memory.Data) and data streamed from files
(fitnets.data.stream.StreamData) both satisfy, so that no caller asks which it has."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from fitnets.data.memory import Batch


class TrainingData(Protocol):
    """Training, validation and test splits, and the batches the loop consumes."""

    @property
    def train(self) -> Sized: ...

    @property
    def val(self) -> Sized | None: ...  # None: no validation split

    @property
    def test(self) -> Sized: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def eval_batch_size(self) -> int: ...

    @property
    def workers(self) -> int:
        """Loader worker processes (0: in memory)."""
        ...

    @property
    def unit(self) -> tuple[str, int]:
        """What a training row holds, for speed figures: ("img", 1) for an image, ("token",
        T) for a block of T tokens (tokens/s is an LM's figure, not blocks/s)."""
        ...

    def loader_advice(self) -> str | None:
        """What would let the loader keep up with the model, said when it does not (None:
        nothing would; batches held in memory are cut the same way whatever the settings,
        so their share of a tiny model's epoch is no fault to warn about)."""
        ...

    @property
    def skipped(self) -> int:
        """Reads of unreadable images skipped so far (data.skip_bad_images)."""
        ...

    def train_batches(self, generator: torch.Generator, start: int = 0,
                      epoch: int = 1) -> Iterator[Batch]:
        """One epoch (``epoch``, 1-based) of shuffled, augmented batches drawn from
        ``generator``, from batch ``start`` on."""
        ...

    def eval_batches(self, split, rows: tuple[int, int] | None = None) -> Iterator[Batch]:
        """Rows ``[lo, hi)`` of ``split`` (all of them by default), in order."""
        ...

    def probe(self, n: int = 2) -> torch.Tensor:
        """A few preprocessed training inputs (to trace shapes and parameters)."""
        ...

    def map_x(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Have every input pass through ``fn`` (e.g. a memory layout)."""
        ...

    def train_inputs(self) -> torch.Tensor | None:
        """The whole training split's preprocessed inputs where they are held in memory (a
        teacher's output cache is indexed by their rows); None when streamed."""
        ...
