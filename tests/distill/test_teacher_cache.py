"""The teacher cache: lookups equal recomputation; disk caches are reused; its modes."""

from __future__ import annotations

import pytest
import torch

from fitnets.data.augment import augment_with_flips
from fitnets.distill.taps import run_to
from fitnets.distill.teacher import cached
from fitnets.distill.teacher_cache import build_teacher_cache, cache_mode
from fitnets.models import build_model
from fitnets.perf import FP32, Perf


def _teacher():
    torch.manual_seed(0)
    t = build_model("mnist_teacher").eval()
    for mod in t.modules():
        if hasattr(mod, "reset_parameters") and mod is not t:
            mod.reset_parameters()
    return t.requires_grad_(False)


def _build(teacher, x, perf, mode="memory", flips=True, what="logits", fn=None):
    msgs = []
    cache = build_teacher_cache(fn or teacher, teacher, x, what=what, flips=flips, mode=mode,
                                perf=perf, batch_size=16, say=msgs.append)
    return cache, msgs


@pytest.mark.parametrize("what", ["logits", "conv2"])
def test_fp32_cache_equals_recomputed_outputs_with_flips(what):
    teacher, x = _teacher(), torch.rand(40, 1, 28, 28)
    fn = teacher if what == "logits" else (lambda v: run_to(teacher, v, ["conv2"])[0])
    cache, msgs = _build(teacher, x, FP32, what=what, fn=fn)
    assert "2 view(s) x 40 images" in msgs[0] and "MiB in memory" in msgs[0]
    g = torch.Generator().manual_seed(1)
    idx = torch.randperm(40, generator=g)[:13]
    xb, flipped = augment_with_flips(x[idx], g, flip=True)
    assert flipped.any() and not flipped.all()
    with torch.no_grad():
        recomputed = fn(xb)
    # the same numbers up to the kernels seeing other batch sizes (exact in practice)
    torch.testing.assert_close(cached(cache, idx, flipped), recomputed, rtol=1e-6, atol=1e-7)


def test_bf16_cache_equals_recomputation_under_the_same_autocast():
    teacher, x = _teacher(), torch.rand(24, 1, 28, 28)
    perf = Perf(torch.device("cpu"), "bf16", True)
    perf.prepare(teacher)
    cache, _ = _build(teacher, x, perf, flips=False)
    assert cache.store.dtype == torch.bfloat16  # stored as the teacher produced it
    idx = torch.tensor([3, 0, 17, 5])
    with torch.no_grad(), perf.autocast():
        recomputed = teacher(perf.layout(x[idx]))
    # bf16 storage: within a bf16 rounding step of the recomputed outputs
    torch.testing.assert_close(cached(cache, idx, None).float(), recomputed.float(), rtol=1e-2,
                               atol=1e-2)


def test_disk_cache_is_written_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("FITNETS_CACHE", str(tmp_path))
    teacher, x = _teacher(), torch.rand(20, 1, 28, 28)
    first, msgs1 = _build(teacher, x, FP32, mode="disk")
    second, msgs2 = _build(teacher, x, FP32, mode="disk")
    assert "computing it once" in msgs1[0] and "reusing" in msgs2[0]
    assert first.path == second.path and first.path.parent == tmp_path / "teacher"
    idx = torch.arange(20)
    assert torch.equal(cached(first, idx, None), cached(second, idx, None))
    other, msgs3 = _build(teacher, x + 0.5, FP32, mode="disk")  # other data: another key
    assert other.path != first.path and "computing" in msgs3[0]


def test_cache_modes_accept_translations():
    # translations no longer refuse: the cache is a bank of every view (test_teacher_bank.py)
    assert cache_mode("off", 0) is None
    assert cache_mode("auto", 0) == "auto"
    assert cache_mode("auto", 4) == "auto"  # decided per stage: bank on disk, or cost
    assert cache_mode("disk", 4) == "disk" and cache_mode("memory", 4) == "memory"
