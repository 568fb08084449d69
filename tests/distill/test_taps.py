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


class TupleBlock(nn.Module):
    """Returns (hidden, attention-like extra), as Hugging Face layers do."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        h = self.lin(x)
        return h, h.sum(-1)


class DictOut(nn.Module):
    def forward(self, x):
        return {"last_hidden_state": x * 2, "pooled": x.mean(-1)}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blk = TupleBlock()
        self.enc = DictOut()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h, _ = self.blk(x)
        return self.head(self.enc(h)["last_hidden_state"])


def test_tuple_and_dict_outputs_are_tapped_by_index_and_key():
    net = Net()
    x = torch.randn(5, 4)
    h0, hidden, pooled = run_to(net, x, ["blk[0]", "enc:last_hidden_state", "enc:pooled"])
    assert torch.equal(h0, net.blk.lin(x)) and torch.equal(hidden, 2 * h0)
    assert torch.allclose(pooled, h0.mean(-1))
    assert tuple(run_to(net, x, ["blk[1]"])[0].shape) == (5,)
    shapes = layer_shapes(net, (4,))
    assert shapes["blk[0]"] == (4,) and shapes["blk[1]"] == () and shapes["enc:pooled"] == ()
    assert get_layer(net, "blk[0]") is net.blk


def test_untapped_containers_and_bad_selectors_say_what_to_write():
    net, x = Net(), torch.randn(2, 4)
    with pytest.raises(FitnetsError, match=r"'blk' returns tuple of 2: \(tensor \(2, 4\), "
                                           r"tensor \(2,\)\).*'blk\[0\]'"):
        run_to(net, x, ["blk"])
    with pytest.raises(FitnetsError, match=r"'enc:last_hidden_state'"):
        run_to(net, x, ["enc"])
    with pytest.raises(FitnetsError, match=r"has no element 5"):
        run_to(net, x, ["blk[5]"])
    with pytest.raises(FitnetsError,
                       match=r"keys 'last_hidden_state', 'pooled'\) has no field 'nope'"):
        run_to(net, x, ["enc:nope"])
    with pytest.raises(FitnetsError, match=r"after the module name give \[INDEX\]"):
        run_to(net, x, ["blk[x]"])
