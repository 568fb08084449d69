"""Batch augmentation on the batch's own device: random translation and horizontal flip,
airbench's alternating flips, and test-time augmentation (``tta_logits``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def augment(x: torch.Tensor, generator: torch.Generator, *, pad: int = 0,
            flip: bool = False) -> torch.Tensor:
    """See ``augment_with_flips``; returns only the batch."""
    return augment_with_flips(x, generator, pad=pad, flip=flip)[0]


def augment_with_flips(x: torch.Tensor, generator: torch.Generator, *, pad: int = 0,
                       flip: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Randomly translate (crop HxW from the zero-padded image) and flip a (N,C,H,W) batch.

    One offset in ``[0, 2*pad]`` per image and axis, and a flip with probability 1/2 per
    image, all applied with one gather (no Python loop over images). Works for uint8 and
    float tensors. Random numbers are drawn from ``generator`` on its own device (use a CPU
    generator for CPU tensors, a CUDA one for CUDA tensors to avoid a transfer), so the
    result is reproducible under a seed. ``pad=0, flip=False`` returns ``x`` unchanged.
    Also returns the (N,) bool mask of the flipped images (None without flips), which the
    teacher cache uses to pick the mirrored view, on the generator's device: a disk cache
    on the host then reads its rows without waiting for the GPU.
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if pad == 0 and not flip:
        return x, None
    n, _, h, w = x.shape
    gdev = generator.device

    def draw(high: int) -> torch.Tensor:
        return torch.randint(0, high, (n,), generator=generator, device=gdev)

    def moved(t: torch.Tensor) -> torch.Tensor:  # non_blocking: no stream sync (memory.py)
        return t.to(x.device, non_blocking=True)

    rows = torch.arange(h, device=x.device).expand(n, h)
    cols = torch.arange(w, device=x.device).expand(n, w)
    if pad:
        xp = F.pad(x, (pad, pad, pad, pad))  # zeros come in from the border
        rows = rows + moved(draw(2 * pad + 1))[:, None]
        cols = cols + moved(draw(2 * pad + 1))[:, None]
    else:
        xp = x
    flipped = None
    if flip:
        # Flipping the crop == reading its columns right to left.
        flipped = draw(2).bool()
        cols = torch.where(moved(flipped)[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n, device=x.device)[:, None, None, None]
    idx_c = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return xp[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]], flipped


def alternating_flips(rows: torch.Tensor, epoch: int) -> torch.Tensor:
    """Which training rows ``rows`` are mirrored in ``epoch`` (1-based) under airbench's
    alternating flips (data.augment_flip=alternate): a fixed pseudo-random half of the rows in
    odd epochs, the other half in even ones, so that every image is seen both ways every two
    epochs (random flips show about a quarter of them one way only). A row's half is the top
    bit of its 32-bit multiplicative (Fibonacci) hash: the same for every run and every
    process, with no state to checkpoint."""
    first = ((rows.long() * 2654435769) % 2**32) >> 31
    return first.bool() ^ (epoch % 2 == 0)


def mirror(x: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """``x`` (N,C,H,W) with the images where ``flipped`` (N,) mirrored left to right."""
    where = flipped.to(x.device, non_blocking=True)[:, None, None, None]
    return torch.where(where, x.flip(-1), x)


TTA = ("none", "flip", "flip_shift")  # data.tta's choices


def tta_logits(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
               mode: str) -> torch.Tensor:
    """``model``'s logits for the batch ``x`` averaged over test-time views (data.tta):
    none: ``model(x)``; flip: the image and its mirror, 1/2 each; flip_shift: airbench's six
    views, the two of flip weighted 1/2 together and both shifted by one pixel up-left and
    down-right, 1/8 each (the uncovered border is zero, as translations pad in training)."""
    if mode not in TTA:
        raise ValueError(f"unknown test-time augmentation {mode!r}; choose one of {TTA}")
    if mode == "none":
        return model(x)

    def both(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * model(v).float() + 0.5 * model(v.flip(-1)).float()

    logits = both(x)
    if mode == "flip":
        return logits
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    shifted = both(padded[..., :h, :w]) + both(padded[..., 2:, 2:])  # down-right, up-left
    return 0.5 * logits + 0.25 * shifted
