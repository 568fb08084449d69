"""Layer taps on a model that is not ours: names, early stop, errors."""

import pytest
import torch
from torch import nn

from fitnets import FitnetsError
from fitnets.distill.taps import get_layer, layer_shapes, run_to, run_with


class Counting(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


class Foreign(nn.Module):
    """Nested containers and a functional forward, like a user's own network."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()),
            Counting(nn.Conv2d(16, 32, 3, stride=2, padding=1)),
        ])
        self.head = Counting(nn.Linear(32, 5))

    def forward(self, x):
        x = self.stem(x)
        for s in self.stages:
            x = s(x)
        return self.head(x.mean((2, 3)))


def test_run_to_returns_the_named_outputs_and_skips_the_layers_above():
    m = Foreign()
    x = torch.randn(2, 3, 16, 16)
    (a,) = run_to(m, x, ["stages.0"])
    assert a.shape == (2, 16, 8, 8)
    assert m.stages[1].calls == 0 and m.head.calls == 0  # nothing above was computed
    expected = m.stages[0](m.stem(x))
    torch.testing.assert_close(a, expected)


def test_run_to_with_two_taps_stops_after_the_deeper_one():
    m = Foreign()
    a, b = run_to(m, torch.randn(1, 3, 16, 16), ["stages.1", "stem.1"])
    assert a.shape == (1, 32, 4, 4) and b.shape == (1, 8, 16, 16)
    assert m.stages[1].calls == 1 and m.head.calls == 0


def test_run_with_runs_everything_and_removes_its_hooks():
    m = Foreign()
    out, (f,) = run_with(m, torch.randn(2, 3, 16, 16), ["stem"])
    assert out.shape == (2, 5) and f.shape == (2, 8, 16, 16)
    assert all(not mod._forward_hooks for mod in m.modules())


def test_unknown_layer_names_the_close_matches_and_lists_the_layers():
    with pytest.raises(FitnetsError) as e:
        get_layer(Foreign(), "stage.0")
    msg = str(e.value)
    assert "'stage.0'" in msg and "'stages.0'" in msg and "stem.0" in msg


def test_a_layer_that_forward_never_calls_is_reported():
    m = Foreign()
    m.unused = nn.Linear(3, 3)
    with pytest.raises(FitnetsError, match="not reached"):
        run_to(m, torch.randn(1, 3, 8, 8), ["unused"])


def test_layer_shapes_lists_every_module_output():
    shapes = layer_shapes(Foreign(), (3, 16, 16))
    assert shapes["stem"] == (8, 16, 16)
    assert shapes["stages.1"] == (32, 4, 4)
    assert shapes["head"] == (5,)
