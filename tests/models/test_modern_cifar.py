"""The modern CIFAR nets: CRD parameter counts, forward/backward, middle-stage hint layers."""

import pytest
import torch
from torch import nn

from fitnets.distill.taps import layer_shapes
from fitnets.models import MODELS, build_model, cifar, count_params

# millions of parameters: He et al.'s CIFAR ResNets are quoted for CIFAR-10, the rest are the
# RepDistiller / CRD numbers for CIFAR-100
CIFAR10_QUOTED = {"resnet20", "resnet32", "resnet56", "resnet110"}
CRD_PARAMS = {
    "resnet20": 0.27, "resnet32": 0.46, "resnet56": 0.86, "resnet110": 1.73,
    "resnet8x4": 1.23, "resnet32x4": 7.43, "wrn_16_2": 0.70, "wrn_40_1": 0.57,
    "wrn_40_2": 2.26, "vgg8": 3.96, "vgg13": 9.46, "mobilenetv2": 0.81, "shufflenetv2": 1.35,
}

HINT_SHAPES = {
    "resnet20": (32, 16, 16), "resnet110": (32, 16, 16), "resnet32x4": (128, 16, 16),
    "wrn_40_2": (64, 16, 16), "vgg13": (256, 4, 4), "mobilenetv2": (32, 4, 4),
    "shufflenetv2": (232, 8, 8),
}


def test_every_cifar_net_is_registered() -> None:
    assert set(CRD_PARAMS) == set(cifar.MODELS) and set(cifar.MODELS) <= set(MODELS)


@pytest.mark.parametrize("name", sorted(CRD_PARAMS))
def test_parameter_count_matches_crd(name: str) -> None:
    classes = 10 if name in CIFAR10_QUOTED else 100
    params = count_params(build_model(name, num_classes=classes)) / 1e6
    assert abs(params - CRD_PARAMS[name]) / CRD_PARAMS[name] < 0.03, params


@pytest.mark.parametrize("name", sorted(CRD_PARAMS))
def test_forward_backward_and_attributes(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=7)
    assert model.input_shape == (3, 32, 32) and model.num_classes == 7
    assert model.default_hint == model.default_guided
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    out.square().sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", sorted(HINT_SHAPES))
def test_default_hint_is_a_middle_stage_with_a_tensor_output(name: str) -> None:
    model = build_model(name)
    shapes = layer_shapes(model, model.input_shape)
    assert shapes[model.default_hint] == HINT_SHAPES[name]
    assert model.default_hint in dict(model.named_children())


def test_in_channels_and_option_b_shortcut() -> None:
    model = build_model("resnet20", num_classes=3, in_channels=1)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    first = model.layer2[0].shortcut  # the shape changes: 1x1 conv + BN (CRD's option B)
    assert isinstance(first[0], nn.Conv2d) and first[0].kernel_size == (1, 1)
    assert isinstance(first[1], nn.BatchNorm2d)
    assert isinstance(model.layer2[1].shortcut, nn.Identity)


def test_depths() -> None:
    def convs(name: str) -> int:
        return sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
                   for m in build_model(name).modules())

    # 3x3 convs + the classifier = the depth in the name
    assert convs("resnet20") + 1 == 20 and convs("resnet110") + 1 == 110
    assert convs("resnet8x4") + 1 == 8 and convs("resnet32x4") + 1 == 32
    assert convs("vgg13") == 10 and convs("vgg8") == 5
