"""count_params / count_mults against hand counts, layer_table and the Table 5 profile."""

import pytest
import torch
from torch import nn

from fitnets.errors import FitnetsError
from fitnets.models import (
    ConvSpec,
    MaxoutNet,
    build_model,
    count_layers,
    count_mults,
    count_params,
    format_profile,
    layer_table,
    profile,
)


def _tiny(batchnorm: bool = False) -> MaxoutNet:
    # 1x6x6 -> maxout conv 3 units x 2 pieces, k3 pad0 (4x4) -> pool 2/2 (2x2)
    # -> fc maxout 5 units x 3 pieces -> classifier 4.
    return MaxoutNet(
        (1, 6, 6), [ConvSpec(3, 2, 3, 0, 2, 2)], num_classes=4, fc=(5, 3), batchnorm=batchnorm
    )


def test_count_mults_equals_hand_count_on_a_tiny_maxout_net() -> None:
    conv = 2 * (4 * 4) * (3 * 3) * 1 * 3  # pieces x positions x kernel area x C_in x C_out
    fc = (3 * 2 * 2) * (5 * 3)  # flattened 12 inputs -> 15 linear features
    classifier = 5 * 4
    assert count_mults(_tiny(), (1, 6, 6)) == conv + fc + classifier == 1064
    # BatchNorm, max and pooling are not multiplications in the authors' count.
    assert count_mults(_tiny(batchnorm=True), (1, 6, 6)) == 1064


def test_count_params_hand_count_and_trainable_only() -> None:
    model = _tiny()
    assert count_params(model) == (9 + 1) * 6 + (12 + 1) * 15 + (5 + 1) * 4 == 279
    model.classifier.weight.requires_grad_(False)
    assert count_params(model) == 279 - 20
    assert count_layers(model) == 3


def test_counting_restores_training_mode() -> None:
    model = _tiny(batchnorm=True)
    model.train()
    count_mults(model, (1, 6, 6))
    layer_table(model, (1, 6, 6))
    assert all(m.training for m in model.modules())


def test_layer_table_shapes_and_params() -> None:
    model = build_model("fitnet4")
    rows = {r["name"]: r for r in layer_table(model, model.input_shape)}
    assert "" not in rows
    assert rows["conv11"]["out_shape"] == (80, 8, 8)
    assert rows["conv11"]["type"] == "MaxoutConvBlock"
    assert rows["conv11.conv"]["out_shape"] == (160, 16, 16)
    assert rows["conv17"]["out_shape"] == (128, 1, 1)
    assert rows["fc1"]["out_shape"] == (500,)
    assert rows["classifier"]["out_shape"] == (10,)
    assert rows["classifier"]["params"] == 501 * 10
    assert rows["conv1"]["params"] == (27 + 1) * 64


def test_profile_rows_relative_to_the_teacher() -> None:
    models = {"teacher": _tiny(), "student": MaxoutNet((1, 6, 6), [ConvSpec(2, 2, 3, 0)], 4)}
    rows = profile(models, (1, 6, 6), batch_size=4, warmup=1, repeats=3)
    assert [r["model"] for r in rows] == ["teacher", "student"]
    t, s = rows
    assert t["speedup"] == 1.0 and t["compression"] == 1.0
    assert t["layers"] == 3 and s["layers"] == 2
    assert s["params"] == count_params(models["student"])
    assert s["mults"] == count_mults(models["student"], (1, 6, 6))
    assert s["compression"] == pytest.approx(t["params"] / s["params"])
    assert s["speedup"] == pytest.approx(t["time_per_image_s"] / s["time_per_image_s"])
    assert all(r["time_per_image_s"] > 0 for r in rows)

    rows2 = profile(models, (1, 6, 6), batch_size=2, warmup=0, repeats=1, teacher="student")
    assert rows2[1]["speedup"] == 1.0 and rows2[1]["compression"] == 1.0

    table = format_profile(rows)
    assert table.splitlines()[0].startswith("| model |")
    assert "| teacher |" in table and "| student |" in table


def test_profile_user_errors() -> None:
    with pytest.raises(FitnetsError, match="teacher"):
        profile({"a": _tiny()}, (1, 6, 6), teacher="b", repeats=1, warmup=0)
    with pytest.raises(FitnetsError):
        profile({}, (1, 6, 6))


def test_profile_does_not_leave_inference_tensors_in_the_model() -> None:
    model = _tiny()
    profile({"m": model}, (1, 6, 6), batch_size=2, warmup=0, repeats=1)
    out = model(torch.randn(2, 1, 6, 6))
    out.sum().backward()
    assert isinstance(model.classifier, nn.Linear) and model.classifier.weight.grad is not None
