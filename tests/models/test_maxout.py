"""Maxout layers, the authors' initialisation and the max-norm constraints."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fitnets.errors import FitnetsError
from fitnets.models import Maxout, MaxoutConv2d, MaxoutLinear, apply_max_norm_, paper_init_

# integration: hypothesis (.ci/run's locked run checks these under its pins)
pytestmark = pytest.mark.integration


def test_maxout_groups_consecutive_channels_hand_worked() -> None:
    # 6 channels, 2 pieces -> 3 outputs; channel c = max(x[2c], x[2c+1]) per position.
    x = torch.tensor([[1.0, 7.0], [5.0, 2.0], [-1.0, -4.0], [-3.0, -2.0], [0.0, 9.0], [8.0, 1.0]])
    x = x.reshape(1, 6, 1, 2)
    out = Maxout(2)(x)
    expected = torch.tensor([[5.0, 7.0], [-1.0, -2.0], [8.0, 9.0]]).reshape(1, 3, 1, 2)
    assert torch.equal(out, expected)
    # 3 pieces over the same 6 channels: groups {0,1,2} and {3,4,5}.
    out3 = Maxout(3)(x)
    assert torch.equal(out3, torch.tensor([[5.0, 7.0], [8.0, 9.0]]).reshape(1, 2, 1, 2))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 4),
    k=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_maxout_matches_naive_loop(n: int, c: int, k: int, seed: int) -> None:
    x = torch.randn(n, c * k, 3, generator=torch.Generator().manual_seed(seed))
    out = Maxout(k)(x)
    assert out.shape == (n, c, 3)
    for j in range(c):
        naive = torch.stack([x[:, j * k + i] for i in range(k)]).amax(0)
        assert torch.equal(out[:, j], naive)


def test_maxout_rejects_bad_pieces_and_channels() -> None:
    with pytest.raises(FitnetsError):
        Maxout(0)
    with pytest.raises(ValueError):
        Maxout(2)(torch.zeros(1, 3, 2, 2))


def test_maxout_conv_is_max_over_conv_pieces() -> None:
    torch.manual_seed(0)
    layer = MaxoutConv2d(2, 3, pieces=2, kernel_size=3, padding=1)
    assert layer.maxout_pieces == 2 and layer.conv.out_channels == 6 and layer.bn is None
    x = torch.randn(2, 2, 5, 5)
    raw = layer.conv(x)
    assert torch.equal(layer(x), torch.maximum(raw[:, 0::2], raw[:, 1::2]))
    bn = MaxoutConv2d(2, 3, pieces=2, kernel_size=3, batchnorm=True)
    assert isinstance(bn.bn, nn.BatchNorm2d) and bn.bn.num_features == 6


def test_maxout_linear_flattens_then_maxes() -> None:
    torch.manual_seed(0)
    layer = MaxoutLinear(12, 4, pieces=3)
    assert layer.maxout_pieces == 3 and layer.linear.out_features == 12
    x = torch.randn(2, 3, 2, 2)
    raw = layer.linear(x.reshape(2, 12)).reshape(2, 4, 3)
    assert torch.equal(layer(x), raw.amax(2))


def test_paper_init_uniform_small_weights_zero_biases() -> None:
    net = nn.Sequential(MaxoutConv2d(3, 8, 2, 3), MaxoutLinear(8, 4, 2), nn.Linear(4, 2))
    paper_init_(net, scale=0.005)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert m.weight.abs().max() <= 0.005
            assert m.weight.abs().max() > 0.001  # actually re-drawn, not zeroed
            assert torch.count_nonzero(m.bias) == 0


def test_max_norm_clips_conv_filters_to_exactly_the_limit() -> None:
    conv = nn.Conv2d(1, 2, kernel_size=(1, 2), bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[3.0, 4.0]]], [[[0.3, 0.4]]]]))  # norms 5, 0.5
    apply_max_norm_(conv, conv_max=0.9, fc_max=None)
    w = conv.weight.detach()
    assert torch.allclose(w[0].norm(), torch.tensor(0.9), atol=1e-6)
    assert torch.allclose(w[0].flatten(), torch.tensor([0.54, 0.72]), atol=1e-6)  # direction kept
    assert torch.equal(w[1].flatten(), torch.tensor([0.3, 0.4]))  # below the limit: untouched


def test_max_norm_limits_weights_into_each_output_unit() -> None:
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
        lin.bias.fill_(10.0)
    apply_max_norm_(lin)  # defaults: fc_max = 1.9365
    w = lin.weight.detach()
    assert torch.allclose(w[0], torch.tensor([1.9365, 0.0, 0.0]), atol=1e-6)
    assert torch.equal(w[1], torch.tensor([1.0, 1.0, 0.0]))
    assert torch.equal(lin.bias.detach(), torch.full((2,), 10.0))  # biases unconstrained

    # Rows (one per output unit) are limited, not nn.Linear's in-feature columns: here every
    # row has norm 1 although the first column has norm sqrt(3).
    lin2 = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        lin2.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]))
    before = lin2.weight.detach().clone()
    apply_max_norm_(lin2, conv_max=None, fc_max=1.5)
    assert torch.equal(lin2.weight.detach(), before)


def test_max_norm_none_skips_that_kind() -> None:
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.Flatten(), nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(5.0)
        net[2].weight.fill_(5.0)
    apply_max_norm_(net, conv_max=None, fc_max=1.0)
    assert net[0].weight.item() == 5.0
    assert net[2].weight.item() == pytest.approx(1.0, abs=1e-6)
    apply_max_norm_(net, conv_max=0.9, fc_max=None)
    assert net[0].weight.item() == pytest.approx(0.9, abs=1e-6)


def _reference_maxout(x: torch.Tensor, k: int) -> torch.Tensor:
    """max(dim) over the pieces: what Maxout computed before its faster route."""
    return x.reshape(x.shape[0], x.shape[1] // k, k, *x.shape[2:]).max(dim=2).values


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_maxout_values_and_gradients_are_max_dims_to_the_bit(k, layout, dtype) -> None:
    # forward by torch.maximum, backward by max(dim)'s scatter: identical values, the
    # gradient to the first piece at an exact tie (as max(dim)), and the same without grad
    g = torch.Generator().manual_seed(k)
    x = torch.randn(4, 3 * k, 5, 5, generator=g).to(dtype)
    x[0, :k] = 0.25  # a tie over all pieces of group 0 of image 0
    x[1, 1] = x[1, 0]  # a tie between pieces 0 and 1 only
    x = x.contiguous(memory_format=layout)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, ref = Maxout(k)(a), _reference_maxout(b, k)
    up = torch.randn(out.shape, generator=g).to(dtype)
    out.backward(up)
    ref.backward(up)
    assert torch.equal(out, ref) and torch.equal(a.grad, b.grad)
    assert torch.equal(a.grad[0, :k], torch.cat([up[0, :1], torch.zeros_like(up[0, :k - 1])]))
    if layout is torch.channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.equal(Maxout(k)(x), ref.detach())


def test_maxout_propagates_nan_from_any_piece() -> None:
    x = torch.tensor([1.0, float("nan"), float("nan"), 1.0, 2.0, 3.0]).reshape(1, 6, 1, 1)
    for grad in (False, True):
        out = Maxout(2)(x.clone().requires_grad_(grad)).flatten()
        assert out[:2].isnan().all() and out[2] == 3.0
