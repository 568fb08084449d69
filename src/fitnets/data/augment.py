"""Batch augmentation on the batch's own device: random translation and horizontal flip
(each image's view reported as one integer, ``view_index``, by which the teacher bank looks
its outputs up; ``apply_view`` shows an image in a view), airbench's alternating flips, and
test-time augmentation (``tta_logits``). Translations bring in zeros from the border, or
with ``fill="reflect"`` the border's mirror image (airbench's; data.augment_pad_mode)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

FILLS = ("zeros", "reflect")  # data.augment_pad_mode's choices


def _check_fill(fill: str) -> None:
    if fill not in FILLS:
        raise ValueError(f"unknown padding {fill!r}; choose one of {FILLS}")


def augment_with_flips(x: torch.Tensor, generator: torch.Generator, *, pad: int = 0,
                       flip: bool = False, fill: str = "zeros"
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Randomly translate (crop HxW from the image padded with ``fill``: zeros or its
    reflection) and flip a (N,C,H,W) batch.

    One offset in ``[0, 2*pad]`` per image and axis, and a flip with probability 1/2 per
    image, all applied with one gather (no Python loop over images). Works for uint8 and
    float tensors. Random numbers are drawn from ``generator`` on its own device (use a CPU
    generator for CPU tensors, a CUDA one for CUDA tensors to avoid a transfer), so the
    result is reproducible under a seed. ``pad=0, flip=False`` returns ``x`` unchanged.

    Also returns the (N,) int64 view of each image (``view_index``: the offsets and the
    flip; None without augmentation), which the teacher bank looks its outputs up by; with
    flips only it is the flip mask as 0/1. It stays on the generator's device: a bank on the
    host then reads its rows without waiting for the GPU.
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if pad == 0 and not flip:
        return x, None
    n = len(x)
    gdev = generator.device

    def draw(high: int) -> torch.Tensor:
        return torch.randint(0, high, (n,), generator=generator, device=gdev)

    def moved(t: torch.Tensor) -> torch.Tensor:  # non_blocking: no stream sync (memory.py)
        return t.to(x.device, non_blocking=True)

    # the draws, in this order, are the run's random stream (resume replays it): row
    # offsets, column offsets, flips
    dy = dx = flipped = None
    if pad:
        dy, dx = draw(2 * pad + 1), draw(2 * pad + 1)
    if flip:
        flipped = draw(2).bool()
    out = crop(x, pad, None if dy is None else moved(dy), None if dx is None else moved(dx),
               None if flipped is None else moved(flipped), fill)
    return out, view_index(pad, dy, dx, flipped)


def crop(x: torch.Tensor, pad: int, dy: torch.Tensor | None, dx: torch.Tensor | None,
         flipped: torch.Tensor | None, fill: str = "zeros") -> torch.Tensor:
    """The HxW crop at offsets (``dy``, ``dx``) of each image of ``x`` padded by ``pad``
    pixels of ``fill`` (zeros, or reflect: F.pad's reflection, the edge pixel not repeated),
    mirrored where ``flipped`` ((N,) tensors on ``x``'s device; None: no offsets, no flips).
    One gather; training's augmentation and the teacher bank both crop with it, so the
    bank's teacher sees the very inputs a run's teacher would."""
    _check_fill(fill)
    n, _, h, w = x.shape
    rows = torch.arange(h, device=x.device).expand(n, h)
    cols = torch.arange(w, device=x.device).expand(n, w)
    xp = x
    if pad and fill == "zeros":
        xp = F.pad(x, (pad, pad, pad, pad))  # zeros come in from the border
        rows = rows + dy[:, None]
        cols = cols + dx[:, None]
    elif pad:  # reflect: read the image itself at reflected coordinates (any dtype)
        if pad >= min(h, w):
            raise ValueError(f"a reflected translation of {pad} pixels needs images larger "
                             f"than that; these are {h}x{w}")
        rows = _reflect(rows + dy[:, None] - pad, h)
        cols = _reflect(cols + dx[:, None] - pad, w)
    if flipped is not None:
        # Flipping the crop == reading its columns right to left.
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n, device=x.device)[:, None, None, None]
    idx_c = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return xp[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]


def _reflect(i: torch.Tensor, size: int) -> torch.Tensor:
    """Coordinates ``i`` in ``[-size + 1, 2 size - 2]`` reflected into ``[0, size)`` about the
    first and last pixels (F.pad's "reflect": -1 reads 1, size reads size - 2)."""
    i = i.abs()
    return torch.where(i > size - 1, 2 * (size - 1) - i, i)


def view_index(pad: int, dy: torch.Tensor | None, dx: torch.Tensor | None,
               flipped: torch.Tensor | None) -> torch.Tensor | None:
    """Each image's view as one integer: ``2 * (dy * (2 pad + 1) + dx) + flipped`` (the
    offsets in ``[0, 2 pad]``; absent parts count 0). The flip is the lowest bit, so
    alternating flips (drawn after the crop, by row and epoch) add it by themselves, and
    with flips only the view is the flip mask. None when nothing varies."""
    if dy is None and flipped is None:
        return None
    if dy is None:
        return flipped.long()
    view = 2 * (dy.long() * (2 * pad + 1) + dx.long())
    return view if flipped is None else view + flipped.long()


def view_count(pad: int, flips: bool) -> int:
    """How many views a bank holds: (2 if flips) x (2 pad + 1)^2 (without flips the views
    are even and bank view ``view // 2``)."""
    return (2 if flips else 1) * (2 * pad + 1) ** 2


def split_view(view: torch.Tensor | int, pad: int) -> tuple:
    """``view_index``'s inverse: (dy, dx, flipped) of ``view`` (a tensor or an int)."""
    side = 2 * pad + 1
    shift, flipped = view // 2, view % 2
    return shift // side, shift % side, flipped


def apply_view(x: torch.Tensor, view: torch.Tensor | int, pad: int,
               fill: str = "zeros") -> torch.Tensor:
    """``x`` (N,C,H,W, not augmented) as augmentation showed it in ``view`` (per image, or one
    int for all): ``apply_view(x, v, pad, fill)`` equals the augmented batch whose views were
    ``v``."""
    if not torch.is_tensor(view):
        view = torch.full((len(x),), int(view), dtype=torch.long)
    view = view.to(x.device, non_blocking=True).long()
    dy, dx, flipped = split_view(view, pad)
    return crop(x, pad, dy if pad else None, dx if pad else None, flipped.bool(), fill)


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
               mode: str, fill: str = "zeros") -> torch.Tensor:
    """``model``'s logits for the batch ``x`` averaged over test-time views (data.tta):
    none: ``model(x)``; flip: the image and its mirror, 1/2 each; flip_shift: airbench's six
    views, the two of flip weighted 1/2 together and both shifted by one pixel up-left and
    down-right, 1/8 each (the uncovered border filled as translations fill it in training,
    ``fill``: zeros, or reflect as airbench)."""
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
    _check_fill(fill)
    padded = F.pad(x, (1, 1, 1, 1), mode="constant" if fill == "zeros" else "reflect")
    shifted = both(padded[..., :h, :w]) + both(padded[..., 2:, 2:])  # down-right, up-left
    return 0.5 * logits + 0.25 * shifted
