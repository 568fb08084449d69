"""Modern CIFAR networks, as in the CRD / RepDistiller codebase (Tian et al. 2020).

These are the teachers and students later distillation papers compare on, so that a FitNet
run here can be set beside their tables. Layouts follow RepDistiller's ``models/`` so that
parameter counts agree with the numbers usually quoted (those are for CIFAR-100, i.e.
``num_classes=100``):

* ResNet-20/32/56/110, ResNet-8x4, ResNet-32x4: He et al.'s CIFAR ResNets (3 stages of
  (depth - 2) / 6 basic blocks). Shortcut: **option B as in CRD** - a 1x1 conv + BN when
  the shape changes (stride or width), identity otherwise.
* WRN-d-k: Zagoruyko & Komodakis' pre-activation wide ResNets (1x1 conv shortcut when the
  width changes), no dropout.
* VGG-8 / VGG-13: CRD's cifar VGG with BN, five conv blocks, global average pool, one
  linear classifier.
* MobileNetV2 (CRD's ``mobile_half``: expansion 6, width 0.5) and ShuffleNetV2 (1x).

The BN layers are always there; builders accept ``batchnorm`` only for a uniform signature.
The default hint / guided layer of each is the output of its middle stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _bn_conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout)]


def _tag(model: nn.Module, num_classes: int, hint: str) -> nn.Module:
    model.input_shape = (3, 32, 32)
    model.num_classes = num_classes
    model.default_hint = hint
    model.default_guided = hint
    return model


# --------------------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = _bn_conv(cin, cout, 3, stride)
        self.conv2, self.bn2 = _bn_conv(cout, cout, 3)
        self.shortcut = (nn.Sequential(*_bn_conv(cin, cout, 1, stride))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 10,
                 in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet needs depth = 6n + 2, got {depth}")
        n = (depth - 2) // 6
        self.conv1, self.bn1 = _bn_conv(in_channels, widths[0], 3)
        cin = widths[0]
        for i, (w, stride) in enumerate(zip(widths[1:], (1, 2, 2)), start=1):
            blocks = [BasicBlock(cin if j == 0 else w, w, stride if j == 0 else 1)
                      for j in range(n)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            cin = w
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))


def _resnet(depth: int, widths: tuple, num_classes: int, in_channels: int) -> nn.Module:
    return _tag(CifarResNet(depth, widths, num_classes, in_channels), num_classes, "layer2")


def resnet20(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = True) -> nn.Module:
    """ResNet-20 (16/32/64 channels, 3 blocks per stage); hint layer2 (32x16x16)."""
    return _resnet(20, (16, 16, 32, 64), num_classes, in_channels)


def resnet32(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = True) -> nn.Module:
    """ResNet-32 (5 blocks per stage); hint layer2 (32x16x16)."""
    return _resnet(32, (16, 16, 32, 64), num_classes, in_channels)


def resnet56(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = True) -> nn.Module:
    """ResNet-56 (9 blocks per stage); hint layer2 (32x16x16)."""
    return _resnet(56, (16, 16, 32, 64), num_classes, in_channels)


def resnet110(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = True) -> nn.Module:
    """ResNet-110 (18 blocks per stage); hint layer2 (32x16x16)."""
    return _resnet(110, (16, 16, 32, 64), num_classes, in_channels)


def resnet8x4(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = True) -> nn.Module:
    """CRD's ResNet-8x4 (4x wider: 32/64/128/256, 1 block per stage); hint layer2."""
    return _resnet(8, (32, 64, 128, 256), num_classes, in_channels)


def resnet32x4(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = True) -> nn.Module:
    """CRD's ResNet-32x4 (32/64/128/256, 5 blocks per stage); hint layer2 (128x16x16)."""
    return _resnet(32, (32, 64, 128, 256), num_classes, in_channels)


# --------------------------------------------------------------------------- WRN


class WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout and stride == 1
        self.shortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        # as in the reference code, a changing shortcut starts from the pre-activated input
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    def __init__(self, depth: int, k: int, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"a WRN needs depth = 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * k, 32 * k, 64 * k)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        for i, stride in enumerate((1, 2, 2), start=1):
            blocks = [WideBlock(widths[i - 1] if j == 0 else widths[i], widths[i],
                                stride if j == 0 else 1) for j in range(n)]
            setattr(self, f"block{i}", nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(widths[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.pool(F.relu(self.bn(x))).flatten(1))


def _wrn(depth: int, k: int, num_classes: int, in_channels: int) -> nn.Module:
    return _tag(WideResNet(depth, k, num_classes, in_channels), num_classes, "block2")


def wrn_16_2(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = True) -> nn.Module:
    """WRN-16-2; hint block2 (64x16x16, pre-activation sum)."""
    return _wrn(16, 2, num_classes, in_channels)


def wrn_40_1(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = True) -> nn.Module:
    """WRN-40-1; hint block2 (32x16x16)."""
    return _wrn(40, 1, num_classes, in_channels)


def wrn_40_2(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = True) -> nn.Module:
    """WRN-40-2; hint block2 (64x16x16)."""
    return _wrn(40, 2, num_classes, in_channels)


# --------------------------------------------------------------------------- VGG


class CifarVGG(nn.Module):
    """Five blocks of conv3x3(+bias)-BN-ReLU, max pool 2/2 between blocks, GAP, linear."""

    def __init__(self, cfg: list[list[int]], num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        cin = in_channels
        for i, widths in enumerate(cfg):
            layers: list[nn.Module] = []
            for w in widths:
                layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
                cin = w
            if i < len(cfg) - 1:
                layers.append(nn.MaxPool2d(2, 2))  # so that a block's output is after pooling
            setattr(self, f"block{i}", nn.Sequential(*layers))
        self.n_blocks = len(cfg)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.n_blocks):
            x = getattr(self, f"block{i}")(x)
        return self.classifier(self.pool(x).flatten(1))


def vgg8(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = True) -> nn.Module:
    """CRD's VGG-8 (one conv per block: 64, 128, 256, 512, 512); hint block2 (256x4x4)."""
    model = CifarVGG([[64], [128], [256], [512], [512]], num_classes, in_channels)
    return _tag(model, num_classes, "block2")


def vgg13(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = True) -> nn.Module:
    """CRD's VGG-13 (two convs per block); hint block2 (256x4x4)."""
    model = CifarVGG([[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
                     num_classes, in_channels)
    return _tag(model, num_classes, "block2")


# --------------------------------------------------------------------------- MobileNetV2


class InvertedResidual(nn.Module):
    """1x1 expand - 3x3 depthwise - 1x1 linear projection; residual when shapes agree."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            *_bn_conv(cin, mid, 1), nn.ReLU(),
            *_bn_conv(mid, mid, 3, stride, groups=mid), nn.ReLU(),
            *_bn_conv(mid, cout, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    # expansion t, channels c, repeats n, first stride s (CRD's CIFAR setting)
    SETTING = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, width: float = 0.5, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        cin = int(32 * width)
        self.conv1 = nn.Sequential(*_bn_conv(in_channels, cin, 3, 2), nn.ReLU())
        for i, (t, c, n, s) in enumerate(self.SETTING, start=1):
            cout = int(c * width)
            blocks = [InvertedResidual(cin if j == 0 else cout, cout, s if j == 0 else 1, t)
                      for j in range(n)]
            setattr(self, f"stage{i}", nn.Sequential(*blocks))
            cin = cout
        last = 1280 if width <= 1.0 else int(1280 * width)
        self.conv2 = nn.Sequential(*_bn_conv(cin, last, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for i in range(1, len(self.SETTING) + 1):
            x = getattr(self, f"stage{i}")(x)
        return self.classifier(self.pool(self.conv2(x)).flatten(1))


def mobilenetv2(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = True) -> nn.Module:
    """CRD's MobileNetV2 at width 0.5 (``mobile_half``); hint stage4 (32x4x4)."""
    return _tag(MobileNetV2(0.5, num_classes, in_channels), num_classes, "stage4")


# --------------------------------------------------------------------------- ShuffleNetV2


def _shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleBlock(nn.Module):
    """Split the channels in half; transform one half (1x1, 3x3 depthwise, 1x1); shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        c = channels // 2
        self.branch = nn.Sequential(
            *_bn_conv(c, c, 1), nn.ReLU(),
            *_bn_conv(c, c, 3, groups=c),
            *_bn_conv(c, c, 1), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return _shuffle(torch.cat([x1, self.branch(x2)], 1))


class ShuffleDown(nn.Module):
    """Stride-2 unit: both branches see the whole input; the channels double."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 2
        self.left = nn.Sequential(*_bn_conv(cin, cin, 3, 2, groups=cin),
                                  *_bn_conv(cin, mid, 1), nn.ReLU())
        self.right = nn.Sequential(*_bn_conv(cin, mid, 1), nn.ReLU(),
                                   *_bn_conv(mid, mid, 3, 2, groups=mid),
                                   *_bn_conv(mid, mid, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _shuffle(torch.cat([self.left(x), self.right(x)], 1))


class ShuffleNetV2(nn.Module):
    def __init__(self, widths=(116, 232, 464, 1024), repeats=(3, 7, 3), num_classes: int = 10,
                 in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Sequential(*_bn_conv(in_channels, 24, 1), nn.ReLU())
        cin = 24
        for i, (w, n) in enumerate(zip(widths[:3], repeats), start=1):
            setattr(self, f"layer{i}",
                    nn.Sequential(ShuffleDown(cin, w), *[ShuffleBlock(w) for _ in range(n)]))
            cin = w
        self.conv2 = nn.Sequential(*_bn_conv(cin, widths[3], 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(self.pool(self.conv2(x)).flatten(1))


def shufflenetv2(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = True) -> nn.Module:
    """CRD's ShuffleNetV2 1x (116/232/464, 1024 features); hint layer2 (232x8x8)."""
    return _tag(ShuffleNetV2(num_classes=num_classes, in_channels=in_channels), num_classes,
                "layer2")


MODELS = {
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet8x4": resnet8x4,
    "resnet32x4": resnet32x4,
    "wrn_16_2": wrn_16_2,
    "wrn_40_1": wrn_40_1,
    "wrn_40_2": wrn_40_2,
    "vgg8": vgg8,
    "vgg13": vgg13,
    "mobilenetv2": mobilenetv2,
    "shufflenetv2": shufflenetv2,
}
