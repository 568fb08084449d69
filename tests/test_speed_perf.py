"""Speed switches: each gives the fp32/contiguous losses within a stated tolerance."""

from __future__ import annotations

import os
import time

import pytest
import torch

from fitnets import FitnetsError
from fitnets.config import PerfConfig, make_config
from fitnets.distill.losses import hint_loss, kd_loss
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


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("FITNETS_TEST_COMPILE"),
                    reason="torch.compile took over 2 minutes to compile this small net on the "
                    "2-core CI CPU; set FITNETS_TEST_COMPILE=1 to run it")
def test_compile_gives_the_same_outputs():
    (a, _), x, _ = _nets()
    with torch.no_grad():
        ref = a(x)
        ref_hint = run_to(a, x, ["conv2"])[0]
    a.compile()
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            got = a(x)
    except Exception as e:  # no working C++ toolchain for inductor, etc.
        pytest.skip(f"torch.compile does not work on this CPU set-up: {type(e).__name__}: {e}")
    if time.perf_counter() - t0 > 120:
        pytest.skip("torch.compile works but took over 2 minutes here")
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # run_to's early stop still works on a compiled module
        torch.testing.assert_close(run_to(a, x, ["conv2"])[0], ref_hint, rtol=1e-4, atol=1e-5)


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


def test_explicit_cache_with_translations_is_refused():
    with pytest.raises(FitnetsError, match="random translations change the teacher's inputs"):
        make_config(None, ["perf.teacher_cache=memory", "data.augment_pad=4"])
    cfg = make_config(None, ["data.augment_pad=4"])  # auto turns itself off
    assert cfg.perf.teacher_cache == "auto"


def test_compile_is_refused_for_hint_stages_with_the_reason(tiny_mnist, tmp_path):
    from fitnets.errors import FitnetsError
    from fitnets.run import run

    base = ["device=cpu", "data.name=mnist", "data.download=false", "data.val_size=40",
            f"data.root={tiny_mnist}", "perf.compile=true"]
    torch.manual_seed(0)
    torch.save(build_model("mnist_teacher").state_dict(), tmp_path / "t.pt")
    for method in ("fitnet", "joint"):
        cfg = make_config(None, [*base, f"method={method}", f"teacher.weights={tmp_path / 't.pt'}"])
        with pytest.raises(FitnetsError, match="cannot be used for hint stages.*forward hooks"):
            run(cfg, "distill", tmp_path / method, verbose=False)
