"""The maxout nets' options that follow the authors' pylearn2 code: ceil pooling, untied
biases, dropout (model.pool_rounding, model.untied_biases, model.dropout_*)."""

import math

import pytest
import torch

from fitnets.config import ModelConfig
from fitnets.distill.regressor import build_regressor, hint_nonlinearity
from fitnets.distill.taps import get_layer, layer_shapes
from fitnets.errors import FitnetsError
from fitnets.models import (
    MaxoutOptions,
    build_model,
    count_mults,
    count_params,
    count_weights,
)
from fitnets.models.blocks import dropout_inputs

CEIL = MaxoutOptions(pool_rounding="ceil")


def _sizes(model) -> list[int]:
    shapes = layer_shapes(model, model.input_shape)
    return [s[1] for n, s in shapes.items() if n.startswith("conv") and "." not in n]


def cuda_convnet_outputs(n: int, k: int, s: int) -> int:
    """pylearn2/sandbox/cuda_convnet/pool.py line 258: ceil((n - k) / s) + 1."""
    return math.ceil((n - k) / s) + 1


@pytest.mark.parametrize("n", range(4, 40))
@pytest.mark.parametrize("k,s", [(4, 2), (2, 2), (3, 2), (3, 3), (8, 1)])
def test_ceil_mode_pool_gives_cuda_convnets_output_size(n, k, s):
    if k > n:
        return
    out = torch.nn.MaxPool2d(k, s, ceil_mode=True)(torch.zeros(1, 1, n, n))
    assert out.shape[-1] == cuda_convnet_outputs(n, k, s)


def test_mnist_teacher_map_sizes_floor_and_ceil():
    assert _sizes(build_model("mnist_teacher")) == [9, 3, 2]  # unchanged default
    ceil = build_model("mnist_teacher", maxout=CEIL)
    assert _sizes(ceil) == [10, 4, 3]  # 28 -conv8-> 21 -pool4/2-> 10 -> 9 -> 4 -> 6 -> 3
    assert layer_shapes(ceil, ceil.input_shape)["conv2"] == (48, 4, 4)


def test_cifar_teacher_map_sizes_ceil_match_the_maxout_yaml():
    # cifar10.yaml sets partial_sum 33 on h0 and 15 on h1: their detector maps are 33x33 and
    # 15x15, so h0's pooled output is 16 (ceil), not 15 (floor, whose h1 detector is 14).
    ceil = build_model("cifar_teacher", maxout=CEIL)
    assert _sizes(ceil) == [16, 7, 5]
    assert _sizes(build_model("cifar_teacher")) == [15, 6, 4]
    assert layer_shapes(ceil, ceil.input_shape)["conv2"] == (192, 7, 7)
    assert _sizes(build_model("svhn_teacher", maxout=CEIL)) == [16, 7, 5]


def test_students_with_even_maps_do_not_change():
    for name in ("mnist_student", "fitnet1", "fitnet4"):
        floor, ceil = build_model(name), build_model(name, maxout=CEIL)
        assert _sizes(floor) == _sizes(ceil)
        assert count_params(floor) == count_params(ceil)


def test_ceil_changes_the_conv_regressors_kernel():
    # MNIST: student conv4 16x4x4 -> teacher conv2 48x4x4 (ceil) needs a 1x1 kernel
    student, teacher = build_model("mnist_student"), build_model("mnist_teacher", maxout=CEIL)
    g = layer_shapes(student, student.input_shape)["conv4"]
    h = layer_shapes(teacher, teacher.input_shape)["conv2"]
    reg = build_regressor(g, h, "conv", hint_nonlinearity(get_layer(teacher, "conv2")))
    assert reg.core.kernel_size == (1, 1) and reg.core.out_channels == 96
    # CIFAR: FitNet 4 conv11 80x8x8 -> teacher conv2 192x7x7 needs 2x2 (authors: ks = 8-7+1)
    student, teacher = build_model("fitnet4"), build_model("cifar_teacher", maxout=CEIL)
    g = layer_shapes(student, student.input_shape)["conv11"]
    h = layer_shapes(teacher, teacher.input_shape)["conv2"]
    assert build_regressor(g, h, "conv").core.kernel_size == (2, 2)


def test_table5_teacher_counts_with_ceil():
    # authors' counting (scripts/computeNumberMult.py): pieces * detector * kernel * Cin * Cout
    t = build_model("cifar_teacher", maxout=CEIL)
    mults = (2 * 33 * 33 * 64 * 3 * 96 + 2 * 15 * 15 * 64 * 96 * 192
             + 2 * 9 * 9 * 25 * 192 * 192 + 5 * 5 * 5 * 192 * 500 + 500 * 10)
    assert count_mults(t, t.input_shape) == mults == 732_290_696  # paper: ~725M
    weights = (3 * 192 * 64 + 96 * 384 * 64 + 192 * 384 * 25 + 192 * 25 * 2500 + 500 * 10)
    assert count_weights(t) == weights == 16_244_360
    assert count_params(t) == weights + 192 + 384 + 384 + 2500 + 10
    m = build_model("mnist_teacher", maxout=CEIL)
    assert count_weights(m) == 64 * 96 + 48 * 96 * 64 + 48 * 96 * 25 + 24 * 9 * 10 == 418_416
    assert count_mults(m, m.input_shape) == 30_746_736


def test_untied_biases_one_per_detector_channel_and_position():
    net = build_model("mnist_teacher", maxout=MaxoutOptions("ceil", untied_biases=True))
    sizes = [(21, 96), (9, 96), (6, 96)]  # detector maps (before the max and the pool)
    for i, (hw, ch) in enumerate(sizes, 1):
        block = getattr(net, f"conv{i}")
        assert block.conv.bias is None
        assert block.untied_bias.shape == (ch * hw * hw,)
    tied = build_model("mnist_teacher", maxout=CEIL)
    extra = sum(ch * hw * hw - ch for hw, ch in sizes)
    assert count_params(net) == count_params(tied) + extra
    assert count_weights(net) == count_weights(tied)


def test_an_untied_bias_acts_at_its_own_position_only():
    net = build_model("mnist_teacher", maxout=MaxoutOptions(untied_biases=True)).eval()
    block = net.conv1
    x = torch.zeros(1, 1, 28, 28)
    with torch.no_grad():
        block.conv.weight.zero_()
        bias = block.untied_bias.view(96, 21, 21)
        bias[0, 3, 5] = 7.0  # piece 0 of unit 0 at row 3, column 5
        z = block.conv(x) + block.untied_bias.view(1, 96, 21, 21)
    assert z[0, 0, 3, 5] == 7.0 and z.abs().sum() == 7.0


def test_untied_biases_escape_max_norm_and_get_lr_scales():
    from fitnets.optim import max_norm_fn, scaled_groups

    net = build_model("cifar_teacher", maxout=MaxoutOptions(untied_biases=True))
    with torch.no_grad():
        net.conv1.untied_bias.fill_(5.0)
    max_norm_fn(net, {"conv*": 0.9})()
    assert net.conv1.untied_bias.eq(5.0).all()
    groups = scaled_groups(net, None, {"conv*": 0.05})
    scaled = next(g for g in groups if g["scale"] == 0.05)["params"]
    assert any(p is net.conv1.untied_bias for p in scaled)


def test_dropout_inputs_by_hand():
    torch.manual_seed(0)
    x = torch.ones(2000, 10)
    kept = dropout_inputs(x, 0.2, rescale=False, training=True)
    assert set(kept.unique().tolist()) <= {0.0, 1.0}  # the maxout yaml's input_scales: 1
    assert kept.mean().item() == pytest.approx(0.8, abs=0.01)
    hidden = dropout_inputs(x, 0.5, rescale=True, training=True)
    assert set(hidden.unique().tolist()) <= {0.0, 2.0}  # pylearn2's default scale 2
    assert hidden.mean().item() == pytest.approx(1.0, abs=0.03)
    assert dropout_inputs(x, 0.5, True, training=False) is x
    assert dropout_inputs(x, 0.0, True, training=True) is x


def test_dropout_in_the_net_trains_stochastically_and_evaluates_deterministically():
    opts = MaxoutOptions(input_dropout=0.2, hidden_dropout=0.5, input_dropout_rescale=False)
    net = build_model("mnist_teacher", maxout=opts)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        net.eval()
        assert torch.equal(net(x), net(x))
        net.train()
        torch.manual_seed(1)
        a = net(x)
        torch.manual_seed(2)
        b = net(x)
    assert not torch.equal(a, b)
    assert [n for n, _ in net.named_children()] == ["conv1", "conv2", "conv3", "classifier"]
    assert net.spec["options"]["hidden_dropout"] == 0.5


def test_dropout_reaches_the_first_layers_input(monkeypatch):
    calls = []
    import fitnets.models.blocks as blocks

    real = blocks.dropout_inputs
    monkeypatch.setattr(blocks, "dropout_inputs",
                        lambda x, p, r, t: calls.append((tuple(x.shape[1:]), p, r)) or real(
                            x, p, r, t))
    net = build_model("mnist_teacher", maxout=MaxoutOptions("ceil", False, 0.2, 0.5, False))
    net(torch.zeros(2, 1, 28, 28))
    assert calls == [((1, 28, 28), 0.2, False), ((48, 10, 10), 0.5, True),
                     ((48, 4, 4), 0.5, True), ((216,), 0.5, True)]


def test_options_come_from_the_model_config_and_are_checked():
    mcfg = ModelConfig(name="mnist_teacher", pool_rounding="ceil", untied_biases=True,
                       dropout_input=0.2, dropout_hidden=0.5, dropout_input_rescale=False)
    assert MaxoutOptions.of(mcfg) == MaxoutOptions("ceil", True, 0.2, 0.5, False)
    assert MaxoutOptions.of(ModelConfig()) == MaxoutOptions()
    with pytest.raises(FitnetsError, match="pool_rounding"):
        MaxoutOptions(pool_rounding="round")
    with pytest.raises(FitnetsError, match="hidden_dropout"):
        MaxoutOptions(hidden_dropout=1.0)


def test_options_on_a_model_that_is_not_a_maxout_net_are_refused():
    with pytest.raises(FitnetsError, match="not one of the built-in maxout nets"):
        build_model("resnet20", maxout=CEIL)
    # the message names the config keys to change, under the model's own section
    with pytest.raises(FitnetsError) as err:
        build_model("resnet20", maxout=MaxoutOptions("ceil", False, 0.0, 0.5, True),
                    key="student")
    assert ("student.pool_rounding=ceil, student.dropout_hidden=0.5 cannot apply to it: leave "
            "them out or set student.pool_rounding=floor student.dropout_hidden=0.0"
            ) in str(err.value)
    build_model("resnet20", maxout=MaxoutOptions())  # defaults are fine anywhere
    with pytest.raises(FitnetsError, match="unknown model"):
        build_model("mnist_teachr", maxout=CEIL)
