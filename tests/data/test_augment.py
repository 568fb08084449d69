"""Batch augmentation: translation by cropping a zero-padded (or reflection-padded) image,
horizontal flips."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fitnets.data.augment import augment_with_flips


def augment(x: torch.Tensor, g: torch.Generator, **kw) -> torch.Tensor:
    """The augmented batch the in-memory and streamed paths train on."""
    return augment_with_flips(x, g, **kw)[0]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def crafted(n=64, h=5, w=6) -> torch.Tensor:
    # Every pixel unique and non-zero, so any shift or flip is detectable exactly.
    base = torch.arange(1, h * w * 2 + 1, dtype=torch.uint8).view(1, 2, h, w)
    return base.repeat(n, 1, 1, 1)


def expected(img: torch.Tensor, dy: int, dx: int, flip: bool) -> torch.Tensor:
    """Hand-built reference: shift by (dy, dx) with zeros filling in, then flip."""
    c, h, w = img.shape
    out = torch.zeros_like(img)
    ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[:, yd, xd] = img[:, ys, xs]
    return out.flip(2) if flip else out


def test_identity_when_disabled():
    x = crafted()
    assert torch.equal(augment(x, gen(0)), x)


def test_shapes_dtypes_and_determinism():
    for x in (crafted(), crafted().float() / 7):
        a = augment(x, gen(3), pad=2, flip=True)
        assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
        assert torch.equal(a, augment(x, gen(3), pad=2, flip=True))
        assert not torch.equal(a, augment(x, gen(4), pad=2, flip=True))


def test_every_output_is_a_shift_or_flip_of_the_input_and_all_occur():
    x = crafted(400)
    pad = 2
    out = augment(x, gen(7), pad=pad, flip=True)
    seen = set()
    for o in out:
        matches = [(dy, dx, f) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)
                   for f in (False, True) if torch.equal(o, expected(x[0], dy, dx, f))]
        assert matches, "output is not a padded crop (+ flip) of the input"
        seen.add(matches[0])
    # 50 possible (dy, dx, flip) outcomes, 400 draws: each should turn up.
    assert len(seen) == (2 * pad + 1) ** 2 * 2


def test_flip_only_flips_about_half():
    x = crafted(1000)
    out = augment(x, gen(1), flip=True)
    flipped = (out == x.flip(3)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped | kept).all()) and 400 < int(flipped.sum()) < 600


def test_shift_only_pad_one_matches_reference():
    x = crafted(200)
    out = augment(x, gen(2), pad=1)
    for o in out:
        assert any(torch.equal(o, expected(x[0], dy, dx, False))
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    assert (out == 0).any()  # some zero padding came in


def reflected(img: torch.Tensor, dy: int, dx: int, flip: bool, pad: int) -> torch.Tensor:
    """Reference: F.pad's reflection (in float), the crop at offset (dy, dx), then flip."""
    c, h, w = img.shape
    xp = F.pad(img[None].float(), (pad,) * 4, mode="reflect")[0]
    out = xp[:, pad + dy:pad + dy + h, pad + dx:pad + dx + w].to(img.dtype)
    return out.flip(2) if flip else out


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_reflect_fills_the_border_with_the_mirror_image(dtype):
    x = crafted(400).to(dtype)
    pad = 2
    out = augment(x, gen(7), pad=pad, flip=True, fill="reflect")
    assert out.dtype == dtype and not (out == 0).any()  # no zero came in
    seen = set()
    for o in out:
        matches = [(dy, dx, f) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)
                   for f in (False, True) if torch.equal(o, reflected(x[0], dy, dx, f, pad))]
        assert len(matches) == 1, "not exactly one reflected crop (+ flip) of the input"
        seen.add(matches[0])
    assert len(seen) == (2 * pad + 1) ** 2 * 2
    # the same draws as zeros: only the border differs
    zeros = augment(x, gen(7), pad=pad, flip=True)
    assert torch.equal(out == zeros, zeros != 0) and (zeros == 0).any()


def test_reflect_refuses_a_pad_as_large_as_the_image_and_unknown_fills():
    with pytest.raises(ValueError, match="larger than that; these are 5x6"):
        augment(crafted(4), gen(0), pad=5, fill="reflect")
    with pytest.raises(ValueError, match="choose one of"):
        augment(crafted(4), gen(0), pad=1, fill="edge")
