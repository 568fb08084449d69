"""Preprocess, augment and batches keep data on its device (CUDA only where available)."""

from __future__ import annotations

import pytest
import torch

from fitnets.data import PREPROCESS, Split, augment, batches, fit_preprocess

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_pipeline_stays_on_device(device):
    x = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    s = Split(x, torch.arange(40)).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    for kind in PREPROCESS:
        p = fit_preprocess(kind, x).to(device)
        for xb, yb in batches(s, 16, shuffle=True, generator=g):
            out = p(augment(xb, g, pad=2, flip=True))
            assert out.device.type == device and yb.device.type == device
            assert out.dtype == torch.float32 and out.shape == xb.shape
    cpu = fit_preprocess("gcn_zca", x)
    torch.testing.assert_close(cpu.to(device)(x.to(device)).cpu(), cpu.to("cpu")(x),
                               atol=1e-3, rtol=1e-4)
