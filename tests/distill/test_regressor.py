"""Regressor shapes, kernels, non-linearities and parameter counts."""

import pytest
import torch
from torch import nn

from fitnets import FitnetsError
from fitnets.distill.regressor import (
    Nonlinearity,
    build_regressor,
    count_params,
    hint_nonlinearity,
)
from fitnets.models import build_model


def test_mnist_pair_gets_the_papers_valid_conv_with_maxout():
    teacher, student = build_model("mnist_teacher"), build_model("mnist_student")
    nl = hint_nonlinearity(teacher.conv2)
    assert nl == Nonlinearity("maxout", 2)
    r = build_regressor((16, 4, 4), (48, 3, 3), "auto", nl)
    assert r.kind == "conv"
    assert r.core.kernel_size == (4 - 3 + 1, 4 - 3 + 1)
    assert r.core.out_channels == 48 * 2  # two maxout pieces per hint channel
    assert count_params(r) == 16 * 96 * 2 * 2 + 96
    out = r(torch.randn(5, 16, 4, 4))
    assert out.shape == (5, 48, 3, 3)
    del student


def test_maxout_regressor_takes_the_max_of_each_group_of_pieces():
    r = build_regressor((2, 1, 1), (1, 1, 1), "conv", Nonlinearity("maxout", 2))
    with torch.no_grad():
        r.core.weight.copy_(torch.tensor([[[[1.0]], [[0.0]]], [[[0.0]], [[1.0]]]]))
        r.core.bias.zero_()
    out = r(torch.tensor([[[[3.0]], [[5.0]]]]))
    assert out.item() == 5.0


def test_fully_connected_regressor_shapes_and_count():
    r = build_regressor((16, 4, 4), (48, 3, 3), "fc", Nonlinearity("relu"))
    assert count_params(r) == 256 * 432 + 432
    out = r(torch.randn(3, 16, 4, 4))
    assert out.shape == (3, 48, 3, 3) and (out >= 0).all()


def test_equal_shapes_need_no_regressor():
    r = build_regressor((8, 4, 4), (8, 4, 4), "auto", Nonlinearity("relu"))
    assert isinstance(r, nn.Identity) and count_params(r) == 0


def test_hint_map_larger_than_guided_map_is_refused_with_what_would_work():
    with pytest.raises(FitnetsError) as e:
        build_regressor((16, 4, 4), (48, 6, 6), "conv", Nonlinearity("none"))
    msg = str(e.value)
    assert "larger" in msg and "hints.regressor=fc" in msg
    # auto falls back to the fully connected regressor
    r = build_regressor((16, 4, 4), (48, 6, 6), "auto", Nonlinearity("none"))
    assert r.kind == "fc"


def test_none_with_different_shapes_is_refused():
    with pytest.raises(FitnetsError, match="same shape"):
        build_regressor((8, 4, 4), (8, 3, 3), "none")


def test_nonlinearity_of_foreign_layers():
    assert hint_nonlinearity(nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU())).kind == "relu"
    seq = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.MaxPool2d(2))
    assert hint_nonlinearity(seq).kind == "relu"  # pooling after the ReLU does not hide it
    assert hint_nonlinearity(nn.Conv2d(1, 1, 1)).kind == "none"
    assert hint_nonlinearity(nn.Sequential(nn.Linear(2, 2), nn.Tanh())).kind == "tanh"
