"""Batch augmentation on the batch's own device: random translation and horizontal flip."""

from __future__ import annotations

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
