"""Preprocessing: scale, standardize, GCN+ZCA, LCN, state_dict round trip."""

from __future__ import annotations

import pytest
import torch

from fitnets.data import PREPROCESS, Preprocess, fit_preprocess
from fitnets.data.preprocess import fit_zca, gcn, lcn
from fitnets.errors import FitnetsError


def images(n=600, c=3, h=4, w=4, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Correlated channels with different means/scales, so whitening has work to do.
    base = torch.rand(n, 1, h, w, generator=g) * 120
    noise = torch.rand(n, c, h, w, generator=g) * torch.tensor([20.0, 60.0, 100.0][:c]).view(
        1, c, 1, 1)
    return (base + noise).round().clamp(0, 255).to(torch.uint8)


def test_scale():
    x = images(10)
    out = fit_preprocess("scale", x)(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out, x.float() / 255)


def test_standardize_zero_mean_unit_std_per_channel():
    x = images()
    out = fit_preprocess("standardize", x)(x).double()
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(0, 2, 3), unbiased=False),
                               torch.ones(3, dtype=torch.float64), atol=1e-4, rtol=0)


def test_gcn_formula():
    x = torch.tensor([[0.0, 10.0, 20.0, 30.0]])
    z = x - 15
    want = 55 * z / torch.sqrt(10 + (z**2).mean())
    torch.testing.assert_close(gcn(x), want)
    assert abs(float(gcn(x).mean())) < 1e-4


def test_zca_whitens_to_identity_covariance():
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(12, 12, generator=g, dtype=torch.float64)
    data = torch.randn(5000, 12, generator=g, dtype=torch.float64) @ mix + 3.0
    t = fit_zca([data[:2000], data[2000:]], 12, filter_bias=1e-6)
    white = (data.float() - t["mean"]) @ t["W"]
    cov = torch.cov(white.double().T, correction=0)
    torch.testing.assert_close(cov, torch.eye(12, dtype=torch.float64), atol=2e-3, rtol=0)
    torch.testing.assert_close(t["W"], t["W"].T)  # ZCA (not PCA) whitening is symmetric


def test_gcn_zca_identity_covariance_off_the_mean_direction():
    x = images(2000, 3, 3, 3)
    p = fit_preprocess("gcn_zca", x, filter_bias=1e-6)
    out = p(x).flatten(1).double()
    d = out.shape[1]
    # GCN removes each image's mean, so the all-ones direction carries no variance;
    # every direction orthogonal to it is whitened to unit variance.
    ones = torch.full((d, 1), d**-0.5, dtype=torch.float64)
    want = torch.eye(d, dtype=torch.float64) - ones @ ones.T
    torch.testing.assert_close(torch.cov(out.T, correction=0), want, atol=5e-3, rtol=0)


def test_gcn_zca_filter_bias_regularises():
    x = images(300, 3, 3, 3)
    out = fit_preprocess("gcn_zca", x)(x)  # pylearn2 default filter_bias=0.1
    assert torch.isfinite(out).all() and out.shape == x.shape
    sharp = fit_preprocess("gcn_zca", x, filter_bias=1e-6)(x)
    damped = fit_preprocess("gcn_zca", x, filter_bias=100.0)(x)

    def var(t):
        return float(torch.cov(t.flatten(1).double().T).trace())
    # The bias damps low-variance directions instead of blowing them up to unit variance;
    # on GCN's scale (55) the default 0.1 is a light touch.
    assert var(damped) < 0.9 * var(sharp) and var(out) <= var(sharp)


def test_lcn_removes_local_brightness_and_flat_images():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 200, (8, 3, 16, 16), generator=g, dtype=torch.uint8)
    p = fit_preprocess("lcn", x)
    out = p(x)
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    # Adding a constant brightness changes nothing (no clipping here): that is LCN's point.
    torch.testing.assert_close(p(x + 40), out, atol=1e-3, rtol=0)
    # Halving the contrast changes nothing either (divisive normalisation).
    half = x // 2
    torch.testing.assert_close(p(half * 2), p(half), atol=1e-4, rtol=0)
    assert abs(float(out.mean())) < 0.1 and 0.5 < float(out.std()) < 2
    # A constant image has no contrast: LCN maps it to (almost exactly) zero, never NaN.
    flat = torch.full((1, 1, 10, 10), 77, dtype=torch.uint8)
    assert lcn(flat.float() / 255).abs().max() < 1e-2


@pytest.mark.parametrize("kind", PREPROCESS)
def test_state_dict_round_trip(kind):
    x = images(200, 3, 4, 4)
    p = fit_preprocess(kind, x)
    d = p.state_dict()
    assert d["kind"] == kind
    assert all(isinstance(v, (torch.Tensor, str, float)) for v in d.values())
    q = Preprocess.from_state_dict(d)
    torch.testing.assert_close(q(x), p(x))
    assert q.to("cpu")(x).device == x.device


def test_errors():
    x = images(10)
    with pytest.raises(FitnetsError, match="zca.*scale, standardize, gcn_zca, lcn"):
        fit_preprocess("zca", x)
    with pytest.raises(FitnetsError, match="sigma.*scale, sqrt_bias, filter_bias"):
        fit_preprocess("gcn_zca", x, sigma=1)
    with pytest.raises(FitnetsError, match="kind"):
        Preprocess.from_state_dict({"kind": "nope"})
