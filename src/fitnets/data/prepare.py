"""From ``data.*`` settings to what a run trains on: the whole dataset in memory, or images
streamed from their files by worker processes (``data.mode``).

auto picks by size: the in-memory path keeps every split preprocessed (float32) on the
training device, so it is used when that fits in ``data.memory_limit_gb`` (default: half of
this machine's memory, or of the GPU's); larger image folders are streamed. The start line
says which, and why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader as Loader

from fitnets.config import DataConfig
from fitnets.data import folder
from fitnets.data.augment import augment_with_flips
from fitnets.data.dataset import balanced_subset
from fitnets.data.images import open_image, read_bytes
from fitnets.data.load import data_root, image_source, load_dataset, resolve_val_size
from fitnets.data.memory import Arrays, Data
from fitnets.data.preprocess import Preprocess, fit_preprocess
from fitnets.data.stream import ImageFiles, PythonData, StreamData, collate
from fitnets.errors import FitnetsError

FIT_SAMPLE = 1000  # streamed: training images the preprocessing is fitted on
_CHANNELS = {"rgb": "RGB", "gray": "L", "auto": "auto"}


@dataclass
class Prepared:
    """A dataset ready to train on, with what models and reports need to know of it."""

    data: Data | StreamData
    input_shape: tuple
    num_classes: int
    preprocess: object  # fitnets.data.preprocess.Preprocess
    dataset: str
    how: str = ""  # the start line's account of memory vs stream
    input_dtype: torch.dtype = torch.float32  # torch.long: token ids (a Python text dataset)


def prepare(d: DataConfig, device: torch.device, shard: tuple[int, int] = (0, 1)) -> Prepared:
    """Load (or list) the dataset ``d`` describes, ready on ``device``; ``shard``: this
    process's (rank, world) under torchrun, for streaming."""
    listing = _listing(d)
    if listing is None:
        if d.mode == "stream":
            raise FitnetsError(f"data.mode=stream reads image folders and zips; dataset "
                               f"'{d.name}' is read into memory (data.mode=auto or memory).")
        return _in_memory(d, device, "")
    mode, why = _choose(d, listing, device)
    if mode == "memory":
        return _in_memory(d, device, why)
    return _streamed(d, listing, device, shard, why)


def _listing(d: DataConfig) -> folder.Listing | None:
    path = image_source(d.name, Path(d.root).expanduser() if d.root else data_root(), d.path)
    if path is None or not path.exists() or d.mode == "memory":
        return None  # load_dataset reports a missing path; memory mode needs no listing
    return folder.list_folder(path)


def memory_limit(d: DataConfig, device: torch.device) -> float:
    """Bytes the in-memory path may use: data.memory_limit_gb, else half the memory."""
    if d.memory_limit_gb:
        return d.memory_limit_gb * 2**30
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2


def _choose(d: DataConfig, listing: folder.Listing, device: torch.device) -> tuple[str, str]:
    """Memory or stream, and the start line that says why: the images the run will hold
    (after data.train_limit / test_limit) at the channels they will be read with."""
    counts = {k: len(v) for k, v in listing.splits.items()
              if not (k == "test" and v is listing.splits.get("val"))}
    if d.train_limit > 0 and "train" in counts:  # the held-out split comes off first
        held = 0 if "val" in counts else resolve_val_size(d.name, counts["train"], d.val_size)
        counts["train"] = min(counts["train"] - held, d.train_limit) + held
    if d.test_limit > 0 and "test" in counts:
        counts["test"] = min(counts["test"], d.test_limit)
    n = sum(counts.values())
    size = d.image_size or _first_size(listing)
    mode = _CHANNELS[d.channels]
    if mode == "auto":
        mode = folder.detect_mode(listing.splits["train"], folder.AUTO_SAMPLE)
    channels = 1 if mode == "L" else 3
    need = n * channels * size * size * 4  # float32, preprocessed, on the device
    limit = memory_limit(d, device)
    mode = d.mode if d.mode != "auto" else ("memory" if need <= limit else "stream")
    why = (f"data: {n:,} images of {channels}x{size}x{size} = {need / 2**30:.2f} GiB as "
           f"float32 (limit {limit / 2**30:.1f} GiB): {mode} mode"
           + ("" if d.mode == "auto" else " (data.mode)"))
    return mode, why


def _first_size(listing: folder.Listing) -> int:
    ref = listing.splits["train"][0]
    w, h = open_image(read_bytes(ref), ref.shown(), "RGB").size
    return min(w, h)


def _in_memory(d: DataConfig, device: torch.device, why: str) -> Prepared:
    """Decode once, fit the preprocessing on the training split and apply it to every split
    (as the authors preprocessed before augmenting); augmentation then works on whole
    batches on the device."""
    if d.random_crop:
        raise FitnetsError("data.random_crop needs data.mode=stream: in memory the images are "
                           "kept at data.image_size, too small to crop from. Use "
                           "data.augment_pad/augment_flip, or stream.")
    opts = {}
    if d.name == "folder":
        opts = {"mode": _CHANNELS[d.channels], "image_size": d.image_size,
                "skip_bad": d.skip_bad_images}
    ds = load_dataset(d.name, d.root, val_size=d.val_size, train_limit=d.train_limit,
                      test_limit=d.test_limit, download=d.download, path=d.path, **opts)
    pre = fit_preprocess(d.preprocess, ds.train.x)

    def arrays(split) -> Arrays | None:
        if split is None or len(split.y) == 0:
            return None
        xs = [pre(split.x[i:i + 4096]) for i in range(0, len(split.y), 4096)]
        return Arrays(torch.cat(xs).to(device), split.y.to(device))

    data = Data(train=arrays(ds.train), val=arrays(ds.val), test=arrays(ds.test),
                batch_size=d.batch_size, eval_batch_size=d.eval_batch_size,
                augment=_augment(d), alternate_flips=d.augment_flip == "alternate")
    return Prepared(data, tuple(ds.input_shape), ds.num_classes, pre, ds.name, why)


def _augment(d: DataConfig, stream: bool = False):
    """The random translations and flips (alternating flips are memory.Data's own)."""
    if stream and d.augment_flip == "alternate":
        raise FitnetsError("data.augment_flip=alternate mirrors each image by its row and the "
                           "epoch, which needs the data in memory (data.mode=memory); streamed "
                           "data can use augment_flip=true.")
    flip = bool(d.augment_flip) and d.augment_flip != "alternate"
    if not (d.augment_pad or flip):
        return None

    def aug(x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        return augment_with_flips(x, g, pad=d.augment_pad, flip=flip)

    return aug


def _streamed(d: DataConfig, listing: folder.Listing, device: torch.device,
              shard: tuple[int, int], why: str) -> Prepared:
    if d.preprocess == "gcn_zca":
        raise FitnetsError("data.preprocess=gcn_zca fits ZCA on the whole training split, "
                           "which streaming never holds; use data.mode=memory (if it fits) "
                           "or preprocess=standardize.")
    mode = _CHANNELS[d.channels]
    if mode == "auto":
        mode = folder.detect_mode(listing.splits["train"], folder.AUTO_SAMPLE)
    size = d.image_size or _first_size(listing)
    train_refs = listing.splits["train"]
    if "val" in listing.splits:
        val_refs = listing.splits["val"]
    else:
        cut = len(train_refs) - resolve_val_size(d.name, len(train_refs), d.val_size)
        train_refs, val_refs = train_refs[:cut], train_refs[cut:]
    train_refs = _limit(train_refs, d.train_limit)
    test_refs = _limit(listing.splits["test"], d.test_limit)

    def files(refs, crop=False):
        return ImageFiles(refs, mode, size, random_crop=crop, skip_bad=d.skip_bad_images)

    train = files(train_refs, crop=d.random_crop)
    sample = files(train_refs[:FIT_SAMPLE])
    pre = fit_preprocess(d.preprocess, collate([sample[i] for i in range(len(sample))])[0])
    data = StreamData(train, files(val_refs) if val_refs else None, files(test_refs),
                      d.batch_size, d.eval_batch_size, preprocess=pre.to(device),
                      device=device, workers=workers(d), augment=_augment(d, stream=True),
                      shard=shard)
    how = (f"{why}; {data.workers} loader workers, {size}x{size} {mode}"
           + (", random-resized crops" if d.random_crop else ""))
    shape = (1 if mode == "L" else 3, size, size)
    return Prepared(data, shape, len(listing.classes), pre, d.name, how)


def _limit(refs: list, n: int) -> list:
    """data.train_limit / test_limit on listed files: the same balanced subset as in memory."""
    if n <= 0 or n >= len(refs):
        return refs
    return [refs[i] for i in balanced_subset(np.array([r.label for r in refs]), n)]


def workers(d: DataConfig) -> int:
    """data.workers, or auto: the cores of this machine shared by its processes, at most 8."""
    if d.workers >= 0:
        return d.workers
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, min(8, (os.cpu_count() or 1) // per_node))



def prepare_python(sets: dict, d: DataConfig, device: torch.device,
                   shard: tuple[int, int] = (0, 1)) -> Prepared:
    """A user's ``torch.utils.data.Dataset``s (or DataLoaders: their dataset, batch size and
    workers are used) for ``train`` and ``val`` / ``test`` (at least one; the other takes
    its place). Items are (image tensor (C, H, W), label); uint8 images are scaled to
    [0, 1], float ones are used as the dataset's transforms made them. Items of integer
    token ids (T,) (int32/int64: a text model's ``input_ids``) are passed on unchanged."""
    if sets.get("train") is None:
        raise FitnetsError("a Python dataset run needs train= a torch Dataset or DataLoader.")
    if sets.get("val") is None and sets.get("test") is None:
        raise FitnetsError("pass val= and/or test= (a torch Dataset or DataLoader) to "
                           "evaluate on; the one given is used for both when only one is.")
    loaders = {k: v for k, v in sets.items() if isinstance(v, Loader)}
    ds = {k: PythonData(v.dataset if isinstance(v, Loader) else v)
          for k, v in sets.items() if v is not None}
    first = ds["train"][0][0]
    tokens = first.dtype in (torch.int32, torch.int64)
    if tokens and (d.augment_pad or d.augment_flip):
        raise FitnetsError(f"data.augment_pad / data.augment_flip translate and flip images; "
                           f"these items are {first.dtype} token ids of shape "
                           f"{tuple(first.shape)}. Set data.augment_pad=0 "
                           "data.augment_flip=false.")
    n_workers = loaders["train"].num_workers if "train" in loaders else workers(d)
    batch = loaders["train"].batch_size if "train" in loaders else d.batch_size
    kind = "scale" if first.dtype == torch.uint8 else "none"
    pre = fit_preprocess("scale", first[None]) if kind == "scale" else Preprocess("none")
    data = StreamData(ds["train"], ds.get("val"), ds.get("test", ds.get("val")), batch,
                      d.eval_batch_size, preprocess=pre.to(device), device=device,
                      workers=n_workers, augment=_augment(d, stream=True), shard=shard)
    how = (f"data: Python datasets ({len(ds['train']):,} training items of "
           f"{tuple(first.shape)} {first.dtype}{' token ids' if tokens else ''}), "
           f"{n_workers} loader workers")
    return Prepared(data, tuple(first.shape), 0, pre, "python", how,
                    input_dtype=first.dtype if tokens else torch.float32)


def dataset_classes(dataset) -> int:
    """A Python dataset's (or DataLoader's) class count where it says it without being read:
    ``classes`` (torchvision's folders), else ``targets`` / ``labels``; 0 when neither."""
    if isinstance(dataset, Loader):
        dataset = dataset.dataset
    if getattr(dataset, "classes", None) is not None:
        return len(dataset.classes)
    for key in ("targets", "labels"):
        labels = getattr(dataset, key, None)
        if labels is not None and len(labels):
            return int(torch.as_tensor(labels).max()) + 1
    return 0
