"""The depth study's students: about the same parameter count at every depth."""

from __future__ import annotations

import pytest
import torch

from fitnets.models import thin
from fitnets.models.thin import thin_cifar, width_for


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("batchnorm", [True, False])
@pytest.mark.parametrize("budget", thin.BUDGETS)
@pytest.mark.parametrize("depth", [1, 3, 5, 7, 9, 11])
def test_every_depth_has_the_budget_within_3_percent(depth, budget, batchnorm):
    name = thin.builder_name(depth, budget, batchnorm)
    assert name.endswith("_nobn") != batchnorm
    net = getattr(thin, name)()
    assert abs(n_params(net) - budget) <= 0.03 * budget
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == depth
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == (depth if batchnorm else 0)
    assert all((c.bias is None) == batchnorm for c in convs)
    w = width_for(depth, budget, batchnorm=batchnorm)
    # the formula the width is solved from, checked against the built net: BN's scale and
    # shift per channel, or else the conv's bias
    per_channel = 2 if batchnorm else 1
    assert n_params(net) == (9 * 3 * w + (depth - 1) * 9 * w * w + per_channel * depth * w
                             + w * 10 + 10)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert net.default_guided == f"features.conv{(depth + 1) // 2}"


def test_students_without_batchnorm_keep_the_signal_through_depth():
    """He initialisation: each conv + ReLU keeps the activations' mean square, so the last
    conv's output is within a small factor of the first's (0.40 with this seed). PyTorch's
    default conv init (kaiming_uniform, a=sqrt(5)) leaves about 1% of it at depth 11."""
    torch.manual_seed(0)
    net = thin.thin_cifar_d11_nobn()
    assert all(c.bias.abs().sum() == 0 for c in net.modules() if isinstance(c, torch.nn.Conv2d))
    seen = {}
    for name in ("conv1", "conv11"):
        getattr(net.features, name).register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, o.pow(2).mean().item()))
    with torch.no_grad():
        net(torch.randn(64, 3, 32, 32))
    ratio = seen["conv11"] / seen["conv1"]
    assert 0.1 < ratio < 10, ratio


def test_builders_take_the_loaders_arguments_and_reject_bad_depths():
    net = thin.thin_cifar_d5_107k(num_classes=100, in_channels=1)
    assert net(torch.zeros(1, 1, 32, 32)).shape == (1, 100)
    assert thin.thin_cifar_d5_107k.__name__ == "thin_cifar_d5_107k"
    assert thin.thin_cifar_d5_107k_nobn.__name__ == "thin_cifar_d5_107k_nobn"
    assert "no BatchNorm" in thin.thin_cifar_d5_107k_nobn.__doc__
    with pytest.raises(ValueError, match="depth must be >= 1"):
        thin_cifar(0)


def test_the_user_builder_syntax_finds_them():
    from fitnets.models import build_model

    net = build_model("fitnets.models.thin:thin_cifar_d7_107k", num_classes=10, in_channels=3)
    assert abs(n_params(net) - 107_000) <= 0.03 * 107_000
    net = build_model("fitnets.models.thin:thin_cifar_d9_nobn", num_classes=10, in_channels=3)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
