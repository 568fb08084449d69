"""Preprocess, augment and batches keep data on its device (CUDA only where available)."""

from __future__ import annotations

import pytest
import torch

from fitnets.data import PREPROCESS, fit_preprocess
from fitnets.data.augment import augment_with_flips
from fitnets.data.memory import Arrays, Data

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_pipeline_stays_on_device(device):
    x = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    g = torch.Generator(device=device).manual_seed(0)
    for kind in PREPROCESS:
        p = fit_preprocess(kind, x).to(device)
        arrays = Arrays(p(x.to(device)), torch.arange(40, device=device))

        def aug(xb, gen):
            return augment_with_flips(xb, gen, pad=2, flip=True)

        data = Data(arrays, None, arrays, batch_size=16, eval_batch_size=16, augment=aug)
        for b in data.train_batches(g):
            assert b.x.device.type == device and b.y.device.type == device
            assert b.x.dtype == torch.float32 and b.x.shape == (len(b), 3, 8, 8)
    cpu = fit_preprocess("gcn_zca", x)
    torch.testing.assert_close(cpu.to(device)(x.to(device)).cpu(), cpu.to("cpu")(x),
                               atol=1e-3, rtol=1e-4)
