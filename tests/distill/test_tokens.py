"""Token hints (issue 17): layouts, per-token regressors between token layers and maps, their
shapes, parameter and multiplication counts, the token order, and the errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fitnets.distill.regressor import Nonlinearity, build_regressor, possible_kinds
from fitnets.distill.tokens import Layout, layout, prefix_tokens
from fitnets.errors import FitnetsError
from fitnets.models import build_model, count_mults, count_params
from fitnets.models.vit import ViT


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("shape, prefix, want", [
    ((65, 64), None, Layout("tokens", 64, 1, (8, 8), 65)),    # CLS + 8x8
    ((64, 64), None, Layout("tokens", 64, 0, (8, 8), 64)),    # no CLS
    ((66, 32), None, Layout("tokens", 32, 2, (8, 8), 66)),    # DeiT: CLS + distillation
    ((128, 16), None, Layout("tokens", 16, 0, None, 128)),    # a text sequence
    ((65, 64), 0, Layout("tokens", 64, 0, None, 65)),         # the model says: no prefix
    ((32, 16, 16), None, Layout("map", 32, 0, (16, 16))),
    ((10,), None, Layout("flat", 10)),
])
def test_layouts(shape, prefix, want) -> None:
    assert layout(shape, prefix) == want


def test_same_token_count_is_one_linear_shared_by_every_token() -> None:
    reg = build_regressor((65, 64), (65, 192))
    assert reg.kind == "token" and reg.direct and reg.keep_prefix
    assert n_params(reg) == 64 * 192 + 192  # not 65*64 x 65*192 as a flat fc would be
    assert count_mults(reg, (65, 64)) == 65 * 64 * 192
    v = torch.randn(3, 65, 64)
    out = reg(v)
    assert out.shape == (3, 65, 192)
    # token t of the output depends on token t of the input only
    torch.testing.assert_close(out[:, 7], reg.proj(v[:, 7]))
    hint = torch.randn(3, 65, 192)
    assert reg.hint_target(hint) is hint


def test_equal_shapes_need_no_regressor_as_in_the_paper() -> None:
    assert isinstance(build_regressor((65, 64), (65, 64)), nn.Identity)


def test_cls_kept_and_grid_resized_by_interpolation() -> None:
    reg = build_regressor((17, 8), (65, 12))  # CLS + 4x4 -> CLS + 8x8
    assert reg.keep_prefix and n_params(reg) == 8 * 12 + 12
    v = torch.randn(2, 17, 8)
    out = reg(v)
    assert out.shape == (2, 65, 12) and reg.hint_target(torch.zeros(2, 65, 12)).shape == (2, 65, 12)
    torch.testing.assert_close(out[:, 0], reg.proj(v[:, 0]))  # CLS -> CLS
    # the patch part is the bilinear resize of the 4x4 grid, projected
    grid = v[:, 1:].transpose(1, 2).reshape(2, 8, 4, 4)
    up = nn.functional.interpolate(grid, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[:, 1:], reg.proj(up.flatten(2).transpose(1, 2)))


def test_cls_dropped_from_both_sides() -> None:
    reg = build_regressor((17, 8), (65, 12), cls_token="drop")
    assert not reg.keep_prefix
    assert reg(torch.randn(2, 17, 8)).shape == (2, 64, 12)
    hint = torch.arange(65.).reshape(1, 65, 1).expand(2, 65, 12)
    torch.testing.assert_close(reg.hint_target(hint), hint[:, 1:])
    assert "drop the teacher's 1 prefix token(s) from the hint" in reg.mapping()


def test_tokens_to_map_keeps_the_row_major_patch_order() -> None:
    # CLS + 2x2 patches of width 3 -> a 3x2x2 map: token 1 + r*2 + c lands at (r, c)
    reg = build_regressor((5, 3), (3, 2, 2), "token")
    with torch.no_grad():
        reg.proj.weight.copy_(torch.eye(3))
        reg.proj.bias.zero_()
    v = torch.randn(2, 5, 3)
    out = reg(v)
    assert out.shape == (2, 3, 2, 2)
    for r in range(2):
        for c in range(2):
            torch.testing.assert_close(out[:, :, r, c], v[:, 1 + 2 * r + c])


def test_map_to_tokens_is_the_inverse_order_and_drops_the_teachers_cls() -> None:
    reg = build_regressor((3, 2, 2), (5, 3), "token")
    with torch.no_grad():
        reg.proj.weight.copy_(torch.eye(3))
        reg.proj.bias.zero_()
    m = torch.randn(2, 3, 2, 2)
    out = reg(m)
    assert out.shape == (2, 4, 3)
    torch.testing.assert_close(out[:, 2], m[:, :, 1, 0])
    assert reg.hint_target(torch.zeros(2, 5, 3)).shape == (2, 4, 3)


@pytest.mark.parametrize("guided, hint, params, mults", [
    ((65, 64), (32, 16, 16), 64 * 32 + 32, 16 * 16 * 64 * 32),  # ViT student, ResNet teacher
    ((32, 16, 16), (65, 192), 32 * 192 + 192, 64 * 32 * 192),   # CNN student, ViT teacher
])
def test_map_token_pairs_cost_one_position_wise_linear(guided, hint, params, mults) -> None:
    reg = build_regressor(guided, hint)
    assert reg.kind == "token" and n_params(reg) == params
    assert count_mults(reg, guided) == mults  # at the hint's grid (resized first/after)
    assert reg(torch.randn(2, *guided)).shape[1:] == reg.hint_shape


def test_relu_hint_layers_get_a_relu() -> None:
    reg = build_regressor((65, 64), (32, 16, 16), nl=Nonlinearity("relu"))
    assert reg(torch.randn(4, 65, 64)).min() >= 0


@pytest.mark.parametrize("guided, hint, kwargs, words", [
    ((128, 16), (100, 16), {}, "not a square patch grid"),
    ((65, 64), (192,), {}, "a flat vector has no tokens"),
    ((64, 16), (65, 16), {"cls_token": "keep"}, "hints.cls_token=keep needs prefix"),
    ((32, 8, 8), (32, 4, 4), {"kind": "token"}, "needs tokens (T, D) on at least one side"),
    ((65, 64), (65, 96), {"nl": Nonlinearity("maxout", 2)}, "hints.nonlinearity=none"),
])
def test_no_sensible_mapping_is_refused_with_the_choices(guided, hint, kwargs, words) -> None:
    with pytest.raises(FitnetsError) as e:
        build_regressor(guided, hint, **kwargs)
    assert words in str(e.value)
    if "flat" in words or "square" in words:
        assert "hints.regressor=fc" in str(e.value)


def test_possible_kinds_offer_token_only_where_it_maps() -> None:
    assert possible_kinds((65, 64), (65, 192)) == ["token", "fc"]
    assert "token" in possible_kinds((65, 64), (32, 16, 16))
    assert "token" not in possible_kinds((128, 16), (100, 16))
    assert "token" not in possible_kinds((32, 8, 8), (32, 8, 8))


# ------------------------------------------------------------------------------ built-in ViTs

def vit_params(dim: int, depth: int, mlp: int = 2, classes: int = 10, tokens: int = 65) -> int:
    block = 2 * 2 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim) + \
        (dim * mlp * dim + mlp * dim) + (mlp * dim * dim + dim)
    embed = 3 * 16 * dim + dim + dim + tokens * dim  # patch conv, CLS, positions
    return embed + depth * block + 2 * dim + dim * classes + classes


@pytest.mark.parametrize("name, dim, depth, tap", [
    ("vit_teacher", 192, 4, "blocks.1"), ("vit_student", 64, 8, "blocks.3"),
    ("vit_teacher_small", 96, 4, "blocks.1"), ("vit_student_small", 32, 8, "blocks.3"),
])
def test_builtin_vits(name, dim, depth, tap) -> None:
    torch.manual_seed(0)
    m = build_model(name, num_classes=10)
    assert isinstance(m, ViT) and count_params(m) == vit_params(dim, depth)
    assert m.input_shape == (3, 32, 32) and prefix_tokens(m) == 1
    assert m.default_hint == m.default_guided == tap
    from fitnets.distill.taps import layer_shapes
    assert layer_shapes(m, (3, 32, 32))[tap] == (65, dim)
    out = m(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_the_student_is_thinner_deeper_and_cheaper_than_the_teacher() -> None:
    t, s = build_model("vit_teacher"), build_model("vit_student")
    assert len(s.blocks) == 2 * len(t.blocks)
    assert count_params(s) * 4 < count_params(t)
    assert count_mults(s, (3, 32, 32)) * 4 < count_mults(t, (3, 32, 32))


def test_the_papers_conv_regressor_on_tokens_names_the_token_regressor() -> None:
    with pytest.raises(FitnetsError, match=r"needs feature maps.*Kinds that work for these "
                                           r"shapes: token, fc \(token: one linear layer"):
        build_regressor((65, 64), (65, 96), "conv")
