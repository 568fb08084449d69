"""data.preprocess=gcn_zca_pylearn2: GCN and ZCA as pylearn2 made the authors' CIFAR data."""

import math

import numpy as np
import pytest
import torch

from fitnets.data.preprocess import Preprocess, fit_preprocess, gcn


def test_pylearn2_gcn_by_hand():
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    # z = x - 1.5; sum z^2 = 5; pylearn2: z / (sqrt(5) / 55)
    expected = [55 * v / math.sqrt(5) for v in (-1.5, -0.5, 0.5, 1.5)]
    assert gcn(x, 55.0, 0.0, total=True)[0].tolist() == pytest.approx(expected)
    # ours: z / sqrt(10 + mean z^2) * 55 = 55 z / sqrt(11.25)
    ours = [55 * v / math.sqrt(10 + 1.25) for v in (-1.5, -0.5, 0.5, 1.5)]
    assert gcn(x, 55.0, 10.0)[0].tolist() == pytest.approx(ours)
    row = gcn(torch.rand(3, 3072) * 255, 55.0, 0.0, total=True)
    assert row.norm(dim=1).tolist() == pytest.approx([55.0] * 3, rel=1e-5)


def test_pylearn2_gcn_leaves_a_flat_image_undivided():
    assert gcn(torch.full((1, 6), 7.0), 55.0, 0.0, total=True).abs().sum() == 0


def _pylearn2_reference(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """global_contrast_normalize(X, scale=55.) then pylearn2's ZCA (filter_bias 0.1)."""
    def gcn_np(x):
        z = x - x.mean(axis=1)[:, None]
        norm = np.sqrt((z ** 2).sum(axis=1)) / 55.0
        norm[norm < 1e-8] = 1.0
        return z / norm[:, None]

    a, b = gcn_np(train), gcn_np(test)
    mean = a.mean(axis=0)
    cov = (a - mean).T @ (a - mean) / a.shape[0] + 0.1 * np.eye(a.shape[1])
    e, v = np.linalg.eigh(cov)
    return (b - mean) @ (v / np.sqrt(e)) @ v.T


def test_fit_and_apply_match_a_numpy_port_of_pylearn2():
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (300, 3, 4, 4), generator=g, dtype=torch.uint8)
    test = torch.randint(0, 256, (5, 3, 4, 4), generator=g, dtype=torch.uint8)
    pre = fit_preprocess("gcn_zca_pylearn2", train)
    out = pre(test)
    ref = _pylearn2_reference(train.flatten(1).double().numpy(),
                              test.flatten(1).double().numpy())
    assert out.shape == test.shape
    assert np.allclose(out.flatten(1).numpy(), ref, atol=1e-3)
    again = Preprocess.from_state_dict(pre.state_dict())
    assert torch.equal(again(test), out)
