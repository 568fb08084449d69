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

import numpy as np
import torch
from torch.utils.data import DataLoader as Loader

from fitnets.config import DataConfig
from fitnets.data import folder, load
from fitnets.data.augment import augment_with_flips
from fitnets.data.images import FileRef, open_image, read_bytes
from fitnets.data.memory import Arrays, Data
from fitnets.data.preprocess import Preprocess, fit_preprocess
from fitnets.data.source import Source
from fitnets.data.splits import Plan, plan, read, take
from fitnets.data.stream import ImageFiles, PythonData, StreamData, collate
from fitnets.data.text import (
    MASK_RATE,
    Masking,
    StreamedTextData,
    Text,
    TextData,
    TokenBlocks,
    blocks,
    fixed_masks,
    masking_for,
    unigram_perplexity,
)
from fitnets.data.training import TrainingData
from fitnets.errors import FitnetsError

FIT_SAMPLE = 1000  # streamed: training images the preprocessing is fitted on
CHANNELS = {"rgb": "RGB", "gray": "L", "auto": "auto"}  # data.channels -> an image mode


@dataclass
class Prepared:
    """A dataset ready to train on, with what models and reports need to know of it."""

    data: TrainingData
    input_shape: tuple
    num_classes: int
    preprocess: object  # fitnets.data.preprocess.Preprocess
    dataset: str
    how: str = ""  # the start line's account of memory vs stream
    input_dtype: torch.dtype = torch.float32  # torch.long: token ids (a Python text dataset)
    tokenizer: str | None = None  # data.name=text: data.tokenizer (a language model's run)
    masking: Masking | None = None  # a masked LM's run: its mask id (else next-token)


def prepare(d: DataConfig, device: torch.device, shard: tuple[int, int] = (0, 1),
            masked: bool = False) -> Prepared:
    """Load (or list) the dataset ``d`` describes, ready on ``device``; ``shard``: this
    process's (rank, world) under torchrun, for streaming; ``masked``: a text corpus for a
    masked language model (the run's models are masked LMs)."""
    source = open_source(d)
    if isinstance(source, Text):  # token ids, not images: their own path
        return prepare_text(source, d, device, masked=masked)
    files = source.files("train") if d.mode != "memory" else None
    if files is None:  # not image files, or memory mode: then nothing needs listing
        if d.mode == "stream":
            raise FitnetsError(f"data.mode=stream reads image folders and zips; dataset "
                               f"'{d.name}' is read into memory (data.mode=auto or memory).")
        return _in_memory(d, source, device, "")
    p = listed_plan(source, d)
    size = d.image_size or _first_size(files)
    mode = CHANNELS[d.channels]
    if mode == "auto":
        mode = folder.detect_mode(files, folder.AUTO_SAMPLE)
    where, why = _choose(d, p, mode, size, device)
    if where == "memory":
        return _in_memory(d, source, device, why)
    return _streamed(d, source, p, mode, size, device, shard, why)


def prepare_text(source: Text, d: DataConfig, device: torch.device,
                 masked: bool = False) -> Prepared:
    """A text corpus (fitnets.data.text) as int64 blocks of ids: every split on ``device``
    (memory mode), or read a batch at a time from the memory-mapped token file (stream mode;
    data.mode=auto streams when the blocks would not fit in memory_limit). data.train_limit /
    test_limit keep the first N blocks. ``masked``: a masked LM's data: inputs are the blocks
    themselves, masked by BERT's rule (training: per batch; validation and test: fixed),
    and the vocabulary has a mask id (the byte tokenizer's is one more id, 257)."""
    if d.augment_pad or d.augment_flip or d.tta != "none" or d.random_crop:
        raise FitnetsError("data.augment_pad / augment_flip / random_crop / tta transform "
                           "images; a text corpus has none: leave them at their defaults.")
    tokens = source.tokens()
    masking = masking_for(source.tokenizer()) if masked else None
    limits = {"train": d.train_limit, "val": 0, "test": d.test_limit}
    streamed = {s: TokenBlocks(tokens.splits[s], d.block_size, limits[s], s) for s in limits}
    need = sum(len(b) for b in streamed.values()) * (d.block_size + 1) * 8  # int64
    where, why = _text_mode(d, need, device)
    if not len(streamed["train"]):
        raise FitnetsError(f"the training split of {source.path} has "
                           f"{len(tokens.splits['train']):,} tokens, fewer than one block of "
                           f"data.block_size={d.block_size} + 1; lower data.block_size or add "
                           "text.")
    if not len(streamed["test"]):
        raise FitnetsError(f"the test split of {source.path} has fewer tokens than one "
                           f"block (data.block_size={d.block_size} + 1); lower "
                           "data.block_size or add documents.")
    common = dict(batch_size=d.batch_size, eval_batch_size=d.eval_batch_size,
                  unigram_ppl=unigram_perplexity(tokens.splits["train"], tokens.vocab_size),
                  masking=masking)
    if where == "stream":
        data: TextData = StreamedTextData(
            train=streamed["train"], val=streamed["val"] if len(streamed["val"]) else None,
            test=streamed["test"], device=device, **common)
    else:
        def split(name: str) -> Arrays | None:
            b = torch.from_numpy(blocks(tokens.splits[name], d.block_size))
            if limits[name]:
                b = b[:limits[name]]
            if len(b) == 0:
                return None
            b = b.to(device)
            if masking is None:
                return Arrays(b[:, :-1], b[:, 1:])  # views of one tensor: a batch copies rows
            if name == "train":  # masked per batch (TextData.train_batches)
                return Arrays(b[:, :-1], b[:, :-1])
            return Arrays(*fixed_masks(b[:, :-1], name, np.arange(len(b)), masking))

        data = TextData(train=split("train"), val=split("val"), test=split("test"), **common)
    counts = ", ".join(f"{s} {len(t):,}" for s, t in tokens.splits.items())
    how = (f"data: text {source.path} ({counts} tokens; {len(data.train):,} training blocks "
           f"of {d.block_size}), tokenizer "
           f"{source.tokenizer_spec} ({tokens.vocab_size:,} ids), token file "
           + (f"{tokens.path} ({'built' if tokens.built else 'reused'})" if tokens.path
              else "not cached (no writable cache folder)")
           + f"; unigram perplexity {data.unigram_ppl:.2f}; {why}")
    if masking is not None:
        how += (f"; masked LM: {100 * MASK_RATE:.0f}% of the positions predicted (BERT's "
                f"80/10/10: mask id {masking.mask_id}, {masking.vocab:,} ids), perplexity "
                "and accuracy of the masked tokens")
    return Prepared(data, (d.block_size,), masking.vocab if masking else tokens.vocab_size,
                    Preprocess("none"), d.name, how, input_dtype=torch.long,
                    tokenizer=source.tokenizer_spec, masking=masking)


def _text_mode(d: DataConfig, need: int, device: torch.device) -> tuple[str, str]:
    """Memory or stream for token blocks, and the start line's reason: data.mode, or auto:
    memory when every split's int64 blocks fit in data.memory_limit_gb."""
    if d.mode != "auto":
        where, because = d.mode, " (data.mode)"
    else:
        limit = memory_limit(d, device)
        where = "memory" if need <= limit else "stream"
        because = f" (limit {limit / 2**30:.1f} GiB)"
    what = ("blocks read a batch at a time from the token file" if where == "stream"
            else "blocks held on the device")
    return where, (f"{need / 2**30:.2f} GiB as int64 blocks: {where} mode{because}, "
                   f"{what}")


def open_source(d: DataConfig) -> Source:
    """The source ``data.name`` names, made once per run; the image-folder settings
    (data.channels, image_size, skip_bad_images) and the text settings (data.tokenizer,
    block_size, val_size) go to the sources that take them."""
    offered = {"mode": CHANNELS[d.channels], "image_size": d.image_size,
               "skip_bad": d.skip_bad_images, "tokenizer": d.tokenizer,
               "block_size": d.block_size, "val_size": d.val_size}
    takes = load.source_options(d.name)
    return load.open_source(d.name, d.root, download=d.download, path=d.path,
                            **{k: v for k, v in offered.items() if k in takes})


def listed_plan(source: Source, d: DataConfig) -> Plan:
    """The plan (fitnets.data.splits) over a source's listed image files: nothing is read."""
    labels = {s: np.array([f.label for f in source.files(s)]) for s in source.splits()}
    return plan(source, labels, val_size=d.val_size, train_limit=d.train_limit,
                test_limit=d.test_limit)


def memory_limit(d: DataConfig, device: torch.device) -> float:
    """Bytes the in-memory path may use: data.memory_limit_gb, else half the memory."""
    if d.memory_limit_gb:
        return d.memory_limit_gb * 2**30
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2


def _choose(d: DataConfig, p: Plan, mode: str, size: int,
            device: torch.device) -> tuple[str, str]:
    """Memory or stream, and the start line that says why: the images the run will hold
    (after data.train_limit / test_limit) at the channels they will be read with."""
    n = p.count()
    channels = 1 if mode == "L" else 3
    need = n * channels * size * size * 4  # float32, preprocessed, on the device
    limit = memory_limit(d, device)
    where = d.mode if d.mode != "auto" else ("memory" if need <= limit else "stream")
    why = (f"data: {n:,} images of {channels}x{size}x{size} = {need / 2**30:.2f} GiB as "
           f"float32 (limit {limit / 2**30:.1f} GiB): {where} mode"
           + ("" if d.mode == "auto" else " (data.mode)"))
    return where, why


def _first_size(files: list[FileRef]) -> int:
    w, h = open_image(read_bytes(files[0]), files[0].shown(), "RGB").size
    return min(w, h)


def _in_memory(d: DataConfig, source: Source, device: torch.device, why: str) -> Prepared:
    """Decode once, fit the preprocessing on the training split and apply it to every split
    (as the authors preprocessed before augmenting); augmentation then works on whole
    batches on the device."""
    if d.random_crop:
        raise FitnetsError("data.random_crop needs data.mode=stream: in memory the images are "
                           "kept at data.image_size, too small to crop from. Use "
                           "data.augment_pad/augment_flip, or stream.")
    ds = read(source, val_size=d.val_size, train_limit=d.train_limit, test_limit=d.test_limit)
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
        return augment_with_flips(x, g, pad=d.augment_pad, flip=flip,
                                  fill=d.augment_pad_mode)

    return aug


def _streamed(d: DataConfig, source: Source, p: Plan, mode: str, size: int,
              device: torch.device, shard: tuple[int, int], why: str) -> Prepared:
    if d.preprocess == "gcn_zca":
        raise FitnetsError("data.preprocess=gcn_zca fits ZCA on the whole training split, "
                           "which streaming never holds; use data.mode=memory (if it fits) "
                           "or preprocess=standardize.")
    train_refs = take(source.files("train"), p.train)
    val_refs = take(source.files(p.val_from), p.val) if p.val is not None else []
    test_refs = take(source.files(p.test_from), p.test)

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
    return Prepared(data, shape, len(source.classes()), pre, d.name, how)


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
