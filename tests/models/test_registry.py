"""Every registered model: shapes, hint/guided layers, registry errors, paper counts."""

import difflib

import pytest
import torch
from torch import nn

from fitnets.errors import FitnetsError
from fitnets.models import (
    MODELS,
    MaxoutConvBlock,
    bert,
    build_model,
    cifar,
    count_mults,
    count_params,
    fast,
    gpt,
    vit,
)

# the paper's maxout nets; the modern CIFAR nets are tested in test_modern_cifar.py, the ViTs in
# test_tokens.py, the fast CIFAR teacher in test_fast_teacher.py
# the language models (token ids in): tests/models/test_gpt.py and test_masked_lm.py
PAPER_MODELS = sorted(n for n in MODELS
                      if n not in cifar.MODELS and n not in vit.MODELS and n not in fast.MODELS
                      and n not in gpt.MODELS and n not in bert.MODELS)


def _out_shape(model: nn.Module, layer: str) -> tuple[int, ...]:
    shapes = {}
    handle = getattr(model, layer).register_forward_hook(
        lambda _m, _i, out: shapes.__setitem__("out", tuple(out.shape[1:]))
    )
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *model.input_shape))
    handle.remove()
    return shapes["out"]


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_forward_backward_and_attributes(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=7)
    assert model.num_classes == 7 and isinstance(model.spec, dict)
    assert len(model.input_shape) == 3
    x = torch.randn(2, *model.input_shape)
    out = model(x)
    assert out.shape == (2, 7)
    out.square().sum().backward()
    assert all(p.grad is not None for p in model.parameters())

    children = [n for n, _ in model.named_children()]
    convs = [n for n in children if n.startswith("conv")]
    assert convs == [f"conv{i}" for i in range(1, len(convs) + 1)]
    assert children == convs + (["fc1"] if "fc1" in children else []) + ["classifier"]
    assert isinstance(model.classifier, nn.Linear)
    for layer in (model.default_hint, model.default_guided):
        assert layer in children
        assert isinstance(getattr(model, layer), MaxoutConvBlock)
        assert getattr(model, layer).maxout_pieces >= 1


@pytest.mark.parametrize("name", ["mnist_student", "fitnet1"])
def test_batchnorm_option_and_in_channels(name: str) -> None:
    model = build_model(name, num_classes=3, in_channels=2, batchnorm=True)
    assert model.input_shape[0] == 2
    assert all(
        isinstance(b.bn, nn.BatchNorm2d) for b in model.modules() if isinstance(b, MaxoutConvBlock)
    )
    out = model(torch.randn(2, *model.input_shape))
    assert out.shape == (2, 3)
    plain = build_model(name)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())


@pytest.mark.parametrize(
    "name, layer, shape",
    [
        ("mnist_teacher", "conv2", (48, 3, 3)),
        ("mnist_student", "conv4", (16, 4, 4)),
        ("cifar_teacher", "conv2", (192, 6, 6)),
        ("fitnet1", "conv6", (32, 8, 8)),
        ("fitnet2", "conv6", (80, 8, 8)),
        ("fitnet3", "conv8", (96, 8, 8)),
        ("fitnet4", "conv11", (80, 8, 8)),
        ("svhn_teacher", "conv2", (128, 6, 6)),
        ("svhn_fitnet", "conv7", (80, 8, 8)),
        ("digits_teacher", "conv2", (64, 2, 2)),
        ("digits_student", "conv3", (16, 4, 4)),
    ],
)
def test_hint_and_guided_output_shapes(name: str, layer: str, shape: tuple) -> None:
    model = build_model(name)
    assert layer in (model.default_hint, model.default_guided)
    assert _out_shape(model, layer) == shape


@pytest.mark.parametrize(
    "teacher, student",
    [
        ("mnist_teacher", "mnist_student"),
        ("digits_teacher", "digits_student"),
        ("cifar_teacher", "fitnet1"),
        ("cifar_teacher", "fitnet4"),
        ("svhn_teacher", "svhn_fitnet"),
    ],
)
def test_default_pairs_allow_a_valid_conv_regressor(teacher: str, student: str) -> None:
    t, s = build_model(teacher), build_model(student)
    hint = _out_shape(t, t.default_hint)
    guided = _out_shape(s, s.default_guided)
    assert guided[1] >= hint[1] and guided[2] >= hint[2]


def test_fitnet4_guided_is_its_last_80_unit_layer() -> None:
    model = build_model("fitnet4")
    assert model.default_guided == "conv11"
    widths = [b.out_channels for b in model.modules() if isinstance(b, MaxoutConvBlock)]
    assert len(widths) == 17 and widths[10] == 80 and widths[11] == 128
    assert model.fc1.out_features == 500 and model.fc1.maxout_pieces == 5


def test_mnist_student_matches_the_notes_table() -> None:
    model = build_model("mnist_student")
    table = [
        (16, 2, 5, 0, None),
        (16, 2, 3, 0, 4),
        (16, 2, 5, 3, None),
        (16, 2, 3, 0, 4),
        (12, 4, 3, 3, None),
        (12, 4, 3, 0, 2),
    ]
    for i, (units, pieces, k, pad, pool) in enumerate(table, start=1):
        block = getattr(model, f"conv{i}")
        assert block.out_channels == units and block.maxout_pieces == pieces
        assert block.conv.kernel_size == (k, k) and block.conv.padding == (pad, pad)
        assert (block.pool.kernel_size if block.pool else None) == pool
    assert model.default_guided == "conv4"


@pytest.mark.parametrize(
    "name, millions, digits",
    [("fitnet1", 30.08, 2), ("fitnet2", 107.6, 1), ("fitnet4", 381.9, 1)],
)
def test_fitnet_multiplications_match_the_paper(name: str, millions: float, digits: int) -> None:
    model = build_model(name)
    assert round(count_mults(model, model.input_shape) / 1e6, digits) == millions


def test_fitnet1_mults_equal_the_hand_formula() -> None:
    # 2 pieces * positions * 9 * C_in * C_out per group at 32x32, 16x16, 8x8, + classifier.
    hand = (
        2
        * 9
        * (
            1024 * (3 * 16 + 16 * 16 + 16 * 16)
            + 256 * (16 * 32 + 2 * 32 * 32)
            + 64 * (32 * 48 + 48 * 48 + 48 * 64)
        )
        + 64 * 10
    )
    model = build_model("fitnet1")
    assert count_mults(model, model.input_shape) == hand == 30_081_664


def test_fitnet3_within_ten_percent_of_the_paper() -> None:
    model = build_model("fitnet3")
    convs = [m for m in model.modules() if isinstance(m, MaxoutConvBlock)]
    assert len(convs) == 11
    assert abs(count_params(model) / 1.6e6 - 1) < 0.10
    assert abs(count_mults(model, model.input_shape) / 392e6 - 1) < 0.10


def test_svhn_fitnet_size() -> None:
    model = build_model("svhn_fitnet")
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == 13
    assert abs(count_params(model) / 1.5e6 - 1) < 0.05


def test_unknown_model_lists_choices_and_suggests() -> None:
    with pytest.raises(FitnetsError) as err:
        build_model("fitnet5")
    msg = str(err.value)
    assert "fitnet5" in msg and "did you mean" in msg.lower()
    assert difflib.get_close_matches("fitnet5", list(MODELS), n=1)[0] in msg
    for name in MODELS:
        assert name in msg


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"in_channels": 0}, {"num_classes": 2.5}])
def test_bad_sizes_are_user_errors(kwargs: dict) -> None:
    with pytest.raises(FitnetsError):
        build_model("mnist_student", **kwargs)


def test_registry_is_a_plain_dict_of_builders() -> None:
    assert type(MODELS) is dict
    assert {
        "mnist_teacher",
        "mnist_student",
        "digits_teacher",
        "digits_student",
        "cifar_teacher",
        "fitnet1",
        "fitnet2",
        "fitnet3",
        "fitnet4",
        "svhn_teacher",
        "svhn_fitnet",
    } <= set(MODELS)


def test_building_leaves_batchnorm_statistics_fresh() -> None:
    model = build_model("mnist_student", batchnorm=True)
    assert model.training
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert int(m.num_batches_tracked) == 0
            assert torch.equal(m.running_var, torch.ones_like(m.running_var))
