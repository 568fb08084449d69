"""Speed switches: each gives the fp32/contiguous losses within a stated tolerance."""

from __future__ import annotations

import time

import pytest
import torch

from fitnets import FitnetsError
from fitnets.config import PerfConfig, make_config
from fitnets.distill.hint import hint_loss
from fitnets.distill.losses import kd_loss
from fitnets.distill.taps import run_to
from fitnets.models import build_model
from fitnets.models.maxout import Maxout
from fitnets.perf import FP32, Perf, resolve_perf

CPU = torch.device("cpu")
# bf16 keeps 8 bits of mantissa: ~0.4% per rounding; a few layers deep the losses agree
# to a few percent. fp32 switches (layout) agree to float rounding.
TOL = {"bf16": 5e-2, "fp32": 1e-5}


def _nets():
    torch.manual_seed(0)
    nets = []
    for _ in range(2):
        m = build_model("mnist_teacher")
        for mod in m.modules():  # the paper's +-0.005 init gives near-zero outputs
            if hasattr(mod, "reset_parameters") and mod is not m:
                mod.reset_parameters()
        nets.append(m.eval())
    x = torch.rand(8, 1, 28, 28)
    y = torch.randint(0, 10, (8,))
    return nets, x, y


def _losses(perf: Perf):
    (a, b), x, y = _nets()
    perf.prepare(a)
    perf.prepare(b)
    x = perf.layout(x)
    with torch.no_grad(), perf.autocast():
        hint = hint_loss(run_to(a, x, ["conv2"])[0], run_to(b, x, ["conv2"])[0])
        kd, _, _ = kd_loss(a(x), b(x), y, lam=4.0, tau=3.0)
    return hint.item(), kd.item()


@pytest.mark.parametrize("precision,channels_last", [("bf16", False), ("fp32", True),
                                                     ("bf16", True)])
def test_switches_give_the_fp32_losses(precision, channels_last):
    ref = _losses(FP32)
    got = _losses(Perf(CPU, precision, channels_last))
    for r, g in zip(ref, got):
        assert g == pytest.approx(r, rel=TOL[precision])


def test_losses_are_fp32_under_autocast():
    (a, b), x, y = _nets()
    with torch.no_grad(), Perf(CPU, "bf16").autocast():
        sa, sb = a(x), b(x)
        assert sa.dtype == torch.bfloat16
        assert kd_loss(sa, sb, y, lam=1.0, tau=3.0)[0].dtype == torch.float32
        assert hint_loss(sa, sb).dtype == torch.float32


def test_channels_last_maxout_equals_contiguous_and_keeps_the_layout():
    x = torch.randn(4, 12, 5, 5, requires_grad=True)
    xc = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    out, out_c = Maxout(2)(x), Maxout(2)(xc)
    assert torch.equal(out, out_c)
    assert out_c.is_contiguous(memory_format=torch.channels_last)
    out.sum().backward()
    out_c.sum().backward()
    assert torch.equal(x.grad, xc.grad)


# torch.compile's first compile on a cold 2-core CPU (inductor builds its C++ kernels) took
# about 20 s for this net; a compile that takes longer than this fails rather than skips
COMPILE_BOUND_S = 150


@pytest.mark.compile
def test_compile_gives_the_same_outputs():
    (a, _), x, _ = _nets()
    with torch.no_grad():
        ref = a(x)
    compiled = torch.compile(a)
    t0 = time.perf_counter()
    with torch.no_grad():
        got = compiled(x)
    seconds = time.perf_counter() - t0
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    assert seconds < COMPILE_BOUND_S, f"torch.compile took {seconds:.0f} s"
    with torch.no_grad():  # a second batch size recompiles (or runs dynamic) and still agrees
        torch.testing.assert_close(compiled(x[:3]), ref[:3], rtol=1e-4, atol=1e-5)


def test_perf_defaults_per_device_and_fp16_on_cpu_refused():
    p = resolve_perf(PerfConfig(), CPU)
    assert p.precision in ("bf16", "fp32") and p.channels_last
    assert resolve_perf(PerfConfig(precision="fp32", channels_last=False), CPU) == FP32
    with pytest.raises(FitnetsError, match="fp16 needs a CUDA device"):
        resolve_perf(PerfConfig(precision="fp16"), CPU)


@pytest.mark.parametrize("override,message", [
    ("perf.precision=fp8", "'perf.precision' must be one of"),
    ("perf.channels_last=sometimes", "'perf.channels_last' must be one of"),
    ("perf.compile=maybe", "'perf.compile' must be true or false"),
    ("perf.teacher_cache=gpu", "'perf.teacher_cache' must be one of"),
    ("perf.speed=11", "unknown config key 'perf.speed'"),
])
def test_perf_keys_validate_with_clear_errors(override, message):
    with pytest.raises(FitnetsError, match=message):
        make_config(None, [override])


def test_explicit_cache_with_translations_is_accepted():
    # a bank of every view (distill/teacher_cache.py) makes a cache valid with translations
    for mode in ("memory", "disk", "auto"):
        cfg = make_config(None, [f"perf.teacher_cache={mode}", "data.augment_pad=4"])
        assert cfg.perf.teacher_cache == mode
