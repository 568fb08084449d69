"""Data larger than memory: images decoded on the fly by DataLoader worker processes.

The loop sees the same ``Batch``es as from the in-memory path. Each epoch's order is a
permutation drawn from the run's generator (as in memory), and a seed drawn after it drives
the augmentation: image i of the epoch is cropped by ``default_rng([seed, i])`` in whichever
worker decodes it, and batch k's translations/flips by a generator seeded from (seed, k). So
an epoch is fixed by the generator state at its start, and a run resumed from a checkpoint
taken mid-epoch (``train.checkpoint_steps``) skips the batches already trained without
decoding them and continues exactly as an uninterrupted run.

Under torchrun each rank loads only its own rows of every global batch (``shard``).
"""

from __future__ import annotations

import random
import zipfile
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from fitnets.data.images import (
    BadImage,
    FileRef,
    center_fit,
    open_image,
    random_resized_crop,
    read_bytes,
    to_array,
)
from fitnets.data.memory import Batch, rank_rows
from fitnets.errors import FitnetsError


class ImageFiles(torch.utils.data.Dataset):
    """Image files decoded one at a time to uint8 (C, size, size) tensors.

    ``self[i]`` fits image i to the square (shorter side, central crop); ``self[(i, seed)]``
    takes a random-resized crop and flip seeded by (seed, i) when ``random_crop`` is on.
    A bad file raises an error naming it, or gives None when ``skip_bad`` (then the batch
    is one image shorter and the loop counts it).
    """

    def __init__(self, files: list[FileRef], mode: str, size: int, random_crop: bool = False,
                 skip_bad: bool = False):
        self.files, self.mode, self.size = list(files), mode, int(size)
        self.random_crop, self.skip_bad = random_crop, skip_bad

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key):
        i, seed = key if isinstance(key, tuple) else (key, None)
        ref = self.files[i]
        try:
            img = open_image(read_bytes(ref), ref.shown(), self.mode)
        except (BadImage, OSError, zipfile.BadZipFile) as e:
            if self.skip_bad:
                return None
            raise FitnetsError(f"{e} Remove or replace the file, or set "
                               "data.skip_bad_images=true to skip (and count) such files.") from e
        if seed is not None and self.random_crop:
            img = random_resized_crop(img, self.size, np.random.default_rng([seed, i]))
        else:
            img = center_fit(img, self.size)
        return torch.from_numpy(to_array(img)), ref.label, i

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1 if self.mode == "L" else 3, self.size, self.size)


def collate(items: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(images, labels, their indices, how many bad files were skipped)."""
    good = [t for t in items if t is not None]
    if not good:
        empty = torch.empty(0, dtype=torch.long)
        return torch.empty(0, dtype=torch.uint8), empty, empty, len(items)
    return (torch.stack([torch.as_tensor(t[0]) for t in good]),
            torch.tensor([int(t[1]) for t in good]), torch.tensor([t[2] for t in good]),
            len(items) - len(good))


class PythonData(torch.utils.data.Dataset):
    """A user's ``torch.utils.data.Dataset`` of (image tensor (C, H, W), label) pairs.

    Item i of an epoch seeds torch's, NumPy's and Python's global generators from (epoch
    seed, i) before the user's ``__getitem__`` runs, so random transforms inside it (e.g.
    torchvision's) draw the same numbers in any worker and again after a resume. The
    generators are put back afterwards (items are also read in the main process).
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        i, seed = key if isinstance(key, tuple) else (key, 0)
        s = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        saved = torch.get_rng_state(), np.random.get_state(), random.getstate()
        torch.manual_seed(s)
        np.random.seed(s)
        random.seed(s)
        try:
            x, y = self.dataset[i][:2]
        finally:
            torch.set_rng_state(saved[0])
            np.random.set_state(saved[1])
            random.setstate(saved[2])
        return torch.as_tensor(x), int(y), i


class _Plan:
    """The batch sampler of the train loader: this epoch's lists of (index, seed)."""

    def __init__(self):
        self.batches: list[list] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class StreamData:
    """Training/validation/test image files read through worker processes, preprocessed
    and augmented on ``device``: fitnets.data.training.TrainingData, as ``memory.Data``."""

    def __init__(self, train: ImageFiles, val: ImageFiles | None, test: ImageFiles,
                 batch_size: int, eval_batch_size: int, *, preprocess: Callable,
                 device: torch.device, workers: int, augment: Callable | None = None,
                 shard: tuple[int, int] = (0, 1), layout: Callable = lambda x: x):
        self.train, self.val, self.test = train, val, test
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.augment, self.preprocess, self.device = augment, preprocess, device
        self.workers, self.rank, self.world = workers, shard[0], shard[1]
        self.layout = layout
        self.skipped = 0  # bad files skipped so far (data.skip_bad_images)
        self.unit = ("img", 1)  # a row is one image (training.TrainingData.unit)
        self._plan = _Plan()
        self._loaders: dict[int, DataLoader] = {}

    def map_x(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.layout = fn  # applied to every batch as it arrives

    def loader_advice(self) -> str:
        """training.TrainingData.loader_advice: more workers, smaller images, or memory."""
        return (f"Raise data.workers (now {self.workers}), use a smaller data.image_size, or "
                "keep the data in memory (data.mode=memory) if it fits.")

    def probe(self, n: int = 2) -> torch.Tensor:
        """A few preprocessed training images (to trace shapes and parameters)."""
        items = [self.train[i] for i in range(min(n, len(self.train)))]
        return self._ready(collate(items)[0])

    def train_inputs(self) -> None:
        return None  # never all read at once

    def _rows(self, n: int) -> tuple[int, int]:
        return rank_rows(n, self.rank, self.world)

    def _loader(self, dataset, sampler) -> DataLoader:
        key = id(dataset)
        if key not in self._loaders:
            w = self.workers
            # A loader's own generator: each new iterator draws its workers' base seed from
            # it, not from torch's global RNG, which the model's dropout draws from. A run
            # resumed at another epoch starts its iterators at other points; with the
            # global RNG the dropout masks after a resume would then differ (the items'
            # own draws are seeded per (epoch, item) anyway).
            self._loaders[key] = DataLoader(
                dataset, batch_sampler=sampler, num_workers=w, collate_fn=collate,
                pin_memory=self.device.type == "cuda", persistent_workers=w > 0,
                prefetch_factor=4 if w > 0 else None, generator=torch.Generator())
        return self._loaders[key]

    def _ready(self, x: torch.Tensor) -> torch.Tensor:
        return self.layout(self.preprocess(x.to(self.device, non_blocking=True)))

    def train_batches(self, generator: torch.Generator, start: int = 0,
                      epoch: int = 1) -> Iterator[Batch]:
        """This rank's part of every global batch of one epoch, from global batch ``start``
        (``epoch``: as in memory.Data; streamed batches do not depend on it)."""
        n, b = len(self.train), self.batch_size
        perm = torch.randperm(n, generator=generator).tolist()
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        plan = []
        for k in range(start, -(-n // b)):
            rows = perm[k * b:(k + 1) * b]
            lo, hi = self._rows(len(rows))
            plan.append((k, len(rows), [(i, seed) for i in rows[lo:hi]] or [(rows[0], seed)]))
        self._plan.batches = [p[2] for p in plan]
        for (k, size, _), (x, y, idx, bad) in zip(plan, self._loader(self.train, self._plan)):
            self.skipped += bad
            x = self._ready(x)
            view = None
            lo, hi = self._rows(size)
            if self.augment is not None:  # the global batch's draws, this rank's rows of them
                g = torch.Generator().manual_seed(seed + k)
                full = x.new_zeros((size, *x.shape[1:]))
                full[lo:lo + len(x)] = x
                x, view = self.augment(full, g)
                x = x[lo:lo + len(idx)]
                view = None if view is None else view[lo:lo + len(idx)]
            yield Batch(x, y.to(self.device, non_blocking=True), None, view,
                        share=len(idx) / size if hi > lo else 0.0, size=size)

    def eval_batches(self, split, rows: tuple[int, int] | None = None,
                     ) -> Iterator[Batch]:
        lo, hi = rows or (0, len(split))
        sampler = [list(range(i, min(i + self.eval_batch_size, hi)))
                   for i in range(lo, hi, self.eval_batch_size)]
        loader = DataLoader(split, batch_sampler=sampler, num_workers=self.workers,
                            collate_fn=collate, pin_memory=self.device.type == "cuda")
        for x, y, idx, bad in loader:
            self.skipped += bad
            if len(idx):
                yield Batch(self._ready(x), y.to(self.device, non_blocking=True))
