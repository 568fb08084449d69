"""The depth study's students: about the same parameter count at every depth."""

from __future__ import annotations

import pytest
import torch

from fitnets.models import thin
from fitnets.models.thin import thin_cifar, width_for


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("budget", thin.BUDGETS)
@pytest.mark.parametrize("depth", [1, 3, 5, 7, 9, 11])
def test_every_depth_has_the_budget_within_3_percent(depth, budget):
    net = getattr(thin, thin.builder_name(depth, budget))()
    assert abs(n_params(net) - budget) <= 0.03 * budget
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == depth
    w = width_for(depth, budget)
    # the formula the width is solved from, checked against the built net
    assert n_params(net) == 9 * 3 * w + (depth - 1) * 9 * w * w + 2 * depth * w + w * 10 + 10
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert net.default_guided == f"features.conv{(depth + 1) // 2}"


def test_builders_take_the_loaders_arguments_and_reject_bad_depths():
    net = thin.thin_cifar_d5_107k(num_classes=100, in_channels=1)
    assert net(torch.zeros(1, 1, 32, 32)).shape == (1, 100)
    assert thin.thin_cifar_d5_107k.__name__ == "thin_cifar_d5_107k"
    with pytest.raises(ValueError, match="depth must be >= 1"):
        thin_cifar(0)


def test_the_user_builder_syntax_finds_them():
    from fitnets.models import build_model

    net = build_model("fitnets.models.thin:thin_cifar_d7_107k", num_classes=10, in_channels=3)
    assert abs(n_params(net) - 107_000) <= 0.03 * 107_000
