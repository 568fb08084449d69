"""Builders for the paper's teachers and students.

Each builder is ``f(num_classes=10, in_channels=..., batchnorm=False) -> MaxoutNet``,
initialised with the authors' ``paper_init_`` (uniform +-0.005, zero biases).

Pooling placement of the CIFAR FitNets
--------------------------------------
The notes say "pool 2/2 after each group" *and* "a global 8x8 max pool before the
classifier". Three 2/2 pools would take 32 -> 16 -> 8 -> 4, leaving nothing for an 8x8
pool. The multiplication counts decide it: with count = pieces * out_h * out_w * 9 *
C_in * C_out summed, the layer lists give exactly 30.08M / 107.6M / 381.9M (FitNet 1 / 2 /
4, FitNet 4 including its FC maxout 500x5) only when group 1 runs at 32x32, group 2 at
16x16 and group 3 at 8x8. So groups 1 and 2 end in a 2/2 pool, and group 3 ends in the
global 8x8 max pool (8x8 -> 1x1), which *is* the "pool after the last group". This also
gives FitNet 4's guided layer (conv11, the last 80-unit layer) an 8x8 output after its
pooling, as the notes state. E.g. FitNet 1: 2*9*(1024*560 + 256*2560 + 64*6912) + 64*10
= 30,081,664.

Guided / hint layers
--------------------
Teachers hint at their 2nd conv layer (the paper's choice for CIFAR and MNIST). Every
CIFAR/SVHN FitNet's guided layer is the *last layer of its middle group* (output 8x8 after
the pool): for FitNet 4 that is the authors' published choice (conv11); for FitNet 1/2/3
it is the middle of the student, and 8x8 >= the teacher hint's 6x6 leaves a 3x3 valid
conv regressor (a 16x16 guided map would need an 11x11 one).

Choices where the paper is silent (see also the notes' "(unsure)" marks)
-----------------------------------------------------------------------
* FitNet 3: 11 maxout conv layers in groups of 3 / 5 / 3 with widths 64 / 96 / 112 and a
  softmax top: 1,573,322 parameters (-1.7% of ~1.6M) and 394.0M multiplications (+0.5% of
  ~392M), found by a grid search over group sizes and per-group widths (multiples of 16,
  non-decreasing). The paper's "13 layers" is read with the same off-by-one its FitNet 1
  and 2 rows show (9 conv + softmax listed as 11).
* SVHN FitNet: 13 weighted layers = 11 maxout conv layers (groups 3 / 4 / 4, widths 32 /
  80 / 112, FitNet geometry) + FC maxout 400x5 (the SVHN teacher's top) + softmax:
  1,500,666 parameters (~1.5M), 193.7M multiplications. Guided layer conv7 (8x8).
* SVHN teacher: the maxout paper's CIFAR geometry with 64 / 128 / 128 units (k8 pad4
  pool 4/2, k8 pad3 pool 4/2, k5 pad3 pool 2/2) and FC maxout 400x5; hint conv2 = 128x6x6.
* CIFAR teacher: floor pooling already gives the notes' 192x6x6 hint (32 -> conv 33 ->
  pool 15 -> conv 14 -> pool 6), so no layer needs ``ceil_mode``. It has ~11.93M
  parameters (7.68M of them in fc1) and ~628M multiplications, against the paper's ~9M /
  ~725M; the paper does not say how it counted.
* MNIST teacher: floor pooling gives 28 -> 21 -> 9 -> 8 -> 3 -> 5 -> 2; hint conv2 is
  48x3x3; student conv4 is 16x4x4 (so a 2x2 valid conv regressor). The teacher has ~417K
  parameters against the paper's ~361K, the student ~36K against ~30K.
* digits (scikit-learn 8x8) nets are this project's own small demo pair.
"""

from __future__ import annotations

from collections.abc import Sequence

from fitnets.models.blocks import ConvSpec, MaxoutNet, MaxoutOptions


def _fitnet_convs(groups: Sequence[Sequence[int]], pieces: int = 2) -> list[ConvSpec]:
    """3x3 pad-1 maxout convs; a 2/2 pool ends every group but the last, which ends in the
    global 8x8 max pool (see the module docstring)."""
    convs: list[ConvSpec] = []
    for g, widths in enumerate(groups):
        last_group = g == len(groups) - 1
        for i, w in enumerate(widths):
            pool = None
            if i == len(widths) - 1:
                pool = 8 if last_group else 2
            convs.append(ConvSpec(w, pieces, 3, 1, pool, pool))
    return convs


def _guided_name(groups: Sequence[Sequence[int]]) -> str:
    """Name of the last conv of the middle group."""
    return f"conv{sum(len(g) for g in groups[: len(groups) // 2 + 1])}"


def _fitnet(
    name: str,
    groups: Sequence[Sequence[int]],
    num_classes: int,
    in_channels: int,
    batchnorm: bool,
    fc: tuple[int, int] | None = None,
    options: MaxoutOptions | None = None,
) -> MaxoutNet:
    # A student used as someone else's teacher hints from the same middle layer.
    middle = _guided_name(groups)
    return MaxoutNet(
        (in_channels, 32, 32),
        _fitnet_convs(groups),
        num_classes,
        fc,
        batchnorm,
        default_hint=middle,
        default_guided=middle,
        name=name,
        options=options,
    )


# ---------------------------------------------------------------- MNIST (1x28x28)


def mnist_teacher(
    num_classes: int = 10, in_channels: int = 1, batchnorm: bool = False,
    options: MaxoutOptions | None = None,
) -> MaxoutNet:
    """The maxout paper's MNIST conv net (3 maxout conv layers + softmax); hint conv2."""
    convs = [
        ConvSpec(48, 2, 8, 0, 4, 2),
        ConvSpec(48, 2, 8, 3, 4, 2),
        ConvSpec(24, 4, 5, 3, 2, 2),
    ]
    return MaxoutNet(
        (in_channels, 28, 28),
        convs,
        num_classes,
        None,
        batchnorm,
        default_hint="conv2",
        default_guided="conv2",
        name="mnist_teacher",
        options=options,
    )


def mnist_student(
    num_classes: int = 10, in_channels: int = 1, batchnorm: bool = False,
    options: MaxoutOptions | None = None,
) -> MaxoutNet:
    """The authors' 6-layer MNIST FitNet (notes section 3 table); guided conv4."""
    convs = [
        ConvSpec(16, 2, 5, 0),
        ConvSpec(16, 2, 3, 0, 4, 2),
        ConvSpec(16, 2, 5, 3),
        ConvSpec(16, 2, 3, 0, 4, 2),
        ConvSpec(12, 4, 3, 3),
        ConvSpec(12, 4, 3, 0, 2, 2),
    ]
    return MaxoutNet(
        (in_channels, 28, 28),
        convs,
        num_classes,
        None,
        batchnorm,
        default_hint="conv4",
        default_guided="conv4",
        name="mnist_student",
        options=options,
    )


# ------------------------------------------------- scikit-learn digits (1x8x8) demo


def digits_teacher(
    num_classes: int = 10, in_channels: int = 1, batchnorm: bool = False,
    options: MaxoutOptions | None = None,
) -> MaxoutNet:
    """Wide, shallow demo teacher: 2 maxout convs (32, 64) + FC maxout 128x2; hint conv2
    (64x2x2)."""
    convs = [ConvSpec(32, 2, 3, 1, 2, 2), ConvSpec(64, 2, 3, 1, 2, 2)]
    return MaxoutNet(
        (in_channels, 8, 8),
        convs,
        num_classes,
        (128, 2),
        batchnorm,
        default_hint="conv2",
        default_guided="conv1",
        name="digits_teacher",
        options=options,
    )


def digits_student(
    num_classes: int = 10, in_channels: int = 1, batchnorm: bool = False,
    options: MaxoutOptions | None = None,
) -> MaxoutNet:
    """Thin, deep demo student: 6 maxout convs of 8-16 units, two 2/2 pools; guided conv3
    (16x4x4, so a 3x3 valid conv regressor reaches the teacher's 2x2 hint)."""
    convs = [
        ConvSpec(8, 2, 3, 1),
        ConvSpec(8, 2, 3, 1, 2, 2),
        ConvSpec(16, 2, 3, 1),
        ConvSpec(16, 2, 3, 1, 2, 2),
        ConvSpec(16, 2, 3, 1),
        ConvSpec(16, 2, 3, 1),
    ]
    return MaxoutNet(
        (in_channels, 8, 8),
        convs,
        num_classes,
        None,
        batchnorm,
        default_hint="conv3",
        default_guided="conv3",
        name="digits_student",
        options=options,
    )


# ------------------------------------------------------- CIFAR-10/100 (3x32x32)


def cifar_teacher(
    num_classes: int = 10, in_channels: int = 3, batchnorm: bool = False,
    options: MaxoutOptions | None = None,
) -> MaxoutNet:
    """The maxout paper's CIFAR net: 3 maxout convs (96, 192, 192) + FC maxout 500x5;
    hint conv2 (192x6x6 with floor pooling)."""
    convs = [
        ConvSpec(96, 2, 8, 4, 4, 2),
        ConvSpec(192, 2, 8, 3, 4, 2),
        ConvSpec(192, 2, 5, 3, 2, 2),
    ]
    return MaxoutNet(
        (in_channels, 32, 32),
        convs,
        num_classes,
        (500, 5),
        batchnorm,
        default_hint="conv2",
        default_guided="conv2",
        name="cifar_teacher",
        options=options,
    )


FITNET1 = ((16, 16, 16), (32, 32, 32), (48, 48, 64))
FITNET2 = ((16, 32, 32), (48, 64, 80), (96, 96, 128))
FITNET3 = ((64, 64, 64), (96, 96, 96, 96, 96), (112, 112, 112))
FITNET4 = ((32, 32, 32, 48, 48), (80,) * 6, (128,) * 6)


def fitnet1(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = False,
            options: MaxoutOptions | None = None) -> MaxoutNet:
    """FitNet 1 (9 maxout convs, softmax); guided conv6 (32x8x8)."""
    return _fitnet("fitnet1", FITNET1, num_classes, in_channels, batchnorm, options=options)


def fitnet2(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = False,
            options: MaxoutOptions | None = None) -> MaxoutNet:
    """FitNet 2 (9 maxout convs, softmax); guided conv6 (80x8x8)."""
    return _fitnet("fitnet2", FITNET2, num_classes, in_channels, batchnorm, options=options)


def fitnet3(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = False,
            options: MaxoutOptions | None = None) -> MaxoutNet:
    """FitNet 3 (our choice: 11 maxout convs 3x64 / 5x96 / 3x112, softmax); guided conv8."""
    return _fitnet("fitnet3", FITNET3, num_classes, in_channels, batchnorm, options=options)


def fitnet4(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = False,
            options: MaxoutOptions | None = None) -> MaxoutNet:
    """FitNet 4, the authors' 19-layer net (17 maxout convs + FC maxout 500x5 + softmax);
    guided conv11 (the last 80-unit layer, 80x8x8)."""
    return _fitnet("fitnet4", FITNET4, num_classes, in_channels, batchnorm, fc=(500, 5),
                   options=options)


# ------------------------------------------------------------------ SVHN (3x32x32)


def svhn_teacher(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = False,
            options: MaxoutOptions | None = None) -> MaxoutNet:
    """Maxout-paper SVHN net: maxout convs 64, 128, 128 + FC maxout 400x5; hint conv2."""
    convs = [
        ConvSpec(64, 2, 8, 4, 4, 2),
        ConvSpec(128, 2, 8, 3, 4, 2),
        ConvSpec(128, 2, 5, 3, 2, 2),
    ]
    return MaxoutNet(
        (in_channels, 32, 32),
        convs,
        num_classes,
        (400, 5),
        batchnorm,
        default_hint="conv2",
        default_guided="conv2",
        name="svhn_teacher",
        options=options,
    )


SVHN_FITNET = ((32, 32, 32), (80, 80, 80, 80), (112, 112, 112, 112))


def svhn_fitnet(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = False,
            options: MaxoutOptions | None = None) -> MaxoutNet:
    """13-layer SVHN FitNet (our choice: 11 maxout convs + FC maxout 400x5 + softmax,
    ~1.5M parameters); guided conv7 (80x8x8)."""
    return _fitnet("svhn_fitnet", SVHN_FITNET, num_classes, in_channels, batchnorm, fc=(400, 5),
                   options=options)
