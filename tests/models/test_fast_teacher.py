"""cifar_fast_teacher (fitnets/models/fast.py): airbench94's network, its whitening layer
computed from the data, its identity-initialised convolutions, its hint layers, and a tiny
end-to-end run with the recipe's options that learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import pickled
from fitnets.checkpoint import load_weights
from fitnets.config import make_config
from fitnets.distill.suggest import candidate_layers
from fitnets.models import MODELS, build_model, data_init
from fitnets.models.fast import whitening_filters
from fitnets.run import run

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_shapes_parameters_and_hint_layers():
    torch.manual_seed(0)
    net = build_model("cifar_fast_teacher", num_classes=10)
    assert "cifar_fast_teacher" in MODELS
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # whiten 24*3*2*2 + 24; blocks: two 3x3 convs (no bias) + two BN biases and weights; head
    blocks = [(24, 64), (64, 256), (256, 256)]
    expected = 24 * 12 + 24 + sum(9 * i * o + 9 * o * o + 4 * o for i, o in blocks) + 256 * 10
    assert sum(p.numel() for p in net.parameters()) == expected == 1_972_792
    layers = dict(candidate_layers(net, (3, 32, 32)))
    assert layers == {"whiten": (24, 31, 31), "block1": (64, 15, 15),
                      "block2": (256, 7, 7), "block3": (256, 3, 3)}
    assert net.default_hint == net.default_guided == "block2"


def test_only_the_whitening_weights_and_bn_scales_are_frozen():
    net = build_model("cifar_fast_teacher")
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {"whiten.weight"} | {f"block{b}.norm{k}.weight" for b in (1, 2, 3)
                                          for k in (1, 2)}


def test_convolutions_start_as_partial_identities():
    net = build_model("cifar_fast_teacher").eval()
    x = torch.randn(2, 64, 15, 15)
    assert torch.equal(net.block1.conv2(x), x)  # 64 -> 64: all of it is the identity
    x = torch.randn(2, 24, 31, 31)
    assert torch.equal(net.block1.conv1(x)[:, :24], x)  # 24 -> 64: the first 24 channels


def test_whitening_filters_by_hand():
    # one channel, every pixel 1: every 2x2 patch is (1, 1, 1, 1); the covariance has one
    # eigenvalue 4 (eigenvector (1, 1, 1, 1) / 2) and three zeros
    w = whitening_filters(torch.ones(3, 1, 5, 5), eps=5e-4)
    assert w.shape == (8, 1, 2, 2)
    assert torch.allclose(w[0].abs(), torch.full((1, 2, 2), 0.5 / (4 + 5e-4) ** 0.5))
    assert torch.equal(w[4:], -w[:4])
    # the first filter's response to a patch: 2 / sqrt(4.0005) ~ 1
    assert (w[0].sum().abs() * 1.0).item() == pytest.approx(2 / 4.0005 ** 0.5, rel=1e-6)


def test_whitening_decorrelates_real_looking_patches():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 16, 16, generator=g)
    x = x + 0.8 * x.roll(1, dims=3) + 0.5 * x.mean(1, keepdim=True)  # correlated pixels
    w = whitening_filters(x, eps=1e-6)[:12].double()
    patches = torch.nn.functional.unfold(x.double(), 2).transpose(1, 2).reshape(-1, 12)
    r = patches @ w.reshape(12, 12).T
    assert torch.allclose(r.T @ r / len(r), torch.eye(12, dtype=torch.float64), atol=1e-3)


def test_data_init_sets_the_whitening_from_the_first_training_images():
    class Data:
        def probe(self, n):
            assert n == 5000
            return torch.ones(3, 3, 8, 8)

    net = build_model("cifar_fast_teacher")
    data_init(net, Data())
    assert torch.equal(net.whiten.weight, whitening_filters(torch.ones(3, 3, 8, 8)))
    data_init(build_model("resnet20"), Data())  # a model without the hook: nothing happens


def write_bars_cifar10(root: Path, per_batch: int = 40, n_test: int = 60) -> Path:
    """CIFAR-10 pickles whose class (0-3 of 10) is the row of a bright horizontal bar (flips
    and 2-pixel shifts keep it), on noise."""
    rng = np.random.default_rng(0)

    def part(n):
        y = rng.integers(0, 4, n)
        x = rng.integers(0, 90, (n, 3, 32, 32))
        for i, c in enumerate(y):
            x[i, :, 3 + 8 * c:7 + 8 * c, 4:28] = 230
        return {b"labels": y.tolist(), b"data": x.reshape(n, -1).astype(np.uint8)}

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickled(part(per_batch)))
    (folder / "test_batch").write_bytes(pickled(part(n_test)))
    names = [f"c{i}".encode() for i in range(10)]
    (folder / "batches.meta").write_bytes(pickled({b"label_names": names}))
    return root


def test_a_tiny_run_with_the_recipes_options_learns(tmp_path):
    """The short recipe on 80 synthetic training images, batch 16, 3 epochs: the whitening
    is set from the data, and the network, options and test-time augmentation together learn
    the bars (this run: 78% test accuracy in the last epoch, 88% with flip_shift)."""
    root = write_bars_cifar10(tmp_path / "data", per_batch=24)
    cfg = make_config(RECIPES / "cifar10-teacher-fast-short.yaml", [
        f"data.root={root}", "data.download=false", "device=cpu", "data.train_limit=0",
        "data.val_size=40", "data.test_limit=0", "data.batch_size=16",
        "train.optim.lr=0.047", "train.epochs=3"])
    summary = run(cfg, "train", tmp_path / "run", verbose=False)
    assert summary["tta"] == "flip_shift" and summary["stalled"] is False
    assert summary["test_acc"] > 0.5, summary  # 4 classes: chance 25%
    w = load_weights(tmp_path / "run" / "model.pt")["state_dict"]["whiten.weight"]
    assert torch.allclose(w, whitening_filters(_first_images(cfg)))  # from the data, frozen


def _first_images(cfg) -> torch.Tensor:
    """The first 5,000 preprocessed training images of ``cfg``'s data (all of these)."""
    from fitnets.data.prepare import prepare

    return prepare(cfg.data, torch.device("cpu")).data.probe(5000)
