"""Regressor kinds on real shape pairs from the built-in nets, and describe_regressor."""

import pytest
import torch
from torch import nn

from fitnets.distill.regressor import (
    Nonlinearity,
    build_regressor,
    describe_regressor,
    possible_kinds,
)
from fitnets.distill.taps import layer_shapes
from fitnets.errors import FitnetsError
from fitnets.models import build_model


def _shape(name: str, layer: str) -> tuple:
    model = build_model(name)
    return layer_shapes(model, model.input_shape)[layer]


def _run(reg: nn.Module, guided: tuple) -> torch.Tensor:
    return reg(torch.randn(2, *guided))


def test_equal_shapes_resnet56_to_resnet20() -> None:
    hint, guided = _shape("resnet56", "layer2"), _shape("resnet20", "layer2")
    assert hint == guided == (32, 16, 16)
    assert isinstance(build_regressor(guided, hint, "auto"), nn.Identity)
    reg = build_regressor(guided, hint, "conv1x1")
    assert reg.kind == "conv1x1" and _run(reg, guided).shape == (2, *hint)
    conv, bn, relu = reg
    assert conv.kernel_size == (1, 1) and isinstance(bn, nn.BatchNorm2d)
    assert isinstance(relu, nn.ReLU) and (_run(reg, guided) >= 0).all()
    d = describe_regressor(reg, guided)
    assert d == {"kind": "conv1x1", "params": 32 * 32 + 2 * 32, "mults": 32 * 32 * 16 * 16}


def test_paper_pair_fitnet4_to_cifar_teacher_is_a_valid_conv() -> None:
    guided, hint = _shape("fitnet4", "conv11"), _shape("cifar_teacher", "conv2")
    assert (guided, hint) == ((80, 8, 8), (192, 6, 6))
    nl = Nonlinearity("maxout", 2)
    reg = build_regressor(guided, hint, "auto", nl)
    assert reg.kind == "conv" and reg.core.kernel_size == (3, 3)
    assert _run(reg, guided).shape == (2, *hint)
    d = describe_regressor(reg, guided)
    assert d["params"] == (80 * 9 + 1) * 384
    assert d["mults"] == 6 * 6 * 9 * 80 * 384
    with pytest.raises(FitnetsError, match="conv1x1.*Kinds that work.*conv.*interp"):
        build_regressor(guided, hint, "conv1x1")
    with pytest.raises(FitnetsError, match="strided.*integer factor"):
        build_regressor(guided, hint, "strided")  # 8 / 6 is not an integer


def test_strided_for_a_twice_larger_guided_map() -> None:
    guided, hint = _shape("resnet20", "layer1"), _shape("resnet56", "layer2")  # 16x32x32 -> 32x16
    reg = build_regressor(guided, hint, "strided")
    assert reg[0].stride == (2, 2) and reg[0].kernel_size == (3, 3)
    assert _run(reg, guided).shape == (2, *hint)
    with pytest.raises(FitnetsError, match="transposed.*Kinds that work.*strided"):
        build_regressor(guided, hint, "transposed")


def test_transposed_for_a_twice_smaller_guided_map() -> None:
    guided, hint = _shape("shufflenetv2", "layer2"), _shape("wrn_40_2", "block2")  # 8x8 -> 16x16
    assert (guided[1:], hint[1:]) == ((8, 8), (16, 16))
    reg = build_regressor(guided, hint, "transposed")
    assert isinstance(reg[0], nn.ConvTranspose2d) and reg[0].stride == (2, 2)
    assert _run(reg, guided).shape == (2, *hint)
    assert "conv" not in possible_kinds(guided, hint)  # a valid conv cannot grow a map
    with pytest.raises(FitnetsError, match="strided"):
        build_regressor(guided, hint, "strided")


def test_interp_maps_any_sizes() -> None:
    guided, hint = _shape("fitnet4", "conv11"), _shape("cifar_teacher", "conv1")  # 8x8 -> 15x15
    reg = build_regressor(guided, hint, "interp")
    out = _run(reg, guided)
    assert out.shape == (2, *hint)
    out.sum().backward()
    assert reg[1].weight.grad is not None
    assert describe_regressor(reg, guided)["mults"] == 15 * 15 * 80 * 96


def test_projection_kinds_need_maps_and_unknown_kinds_list_choices() -> None:
    with pytest.raises(FitnetsError, match=r"needs feature maps.*Kinds that work: fc"):
        build_regressor((500,), (10, 4, 4), "conv1x1")
    with pytest.raises(FitnetsError, match="conv1x1, strided, transposed, interp"):
        build_regressor((8, 4, 4), (8, 4, 4), "bogus")


def test_existing_kinds_unchanged() -> None:
    assert isinstance(build_regressor((8, 4, 4), (8, 4, 4)), nn.Identity)
    assert build_regressor((8, 4, 4), (8, 2, 2)).kind == "conv"
    assert build_regressor((8, 2, 2), (8, 4, 4)).kind == "fc"
    assert describe_regressor(nn.Identity(), (8, 4, 4)) == {"kind": "none", "params": 0,
                                                            "mults": 0}
