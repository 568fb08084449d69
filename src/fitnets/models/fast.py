"""A strong CIFAR teacher in minutes: the network of airbench94 (Keller Jordan 2024, "94% on
CIFAR-10 in 3.29 seconds on a single GPU", arXiv 2404.00498, and the cifar10-airbench
README), written here from its published description.

    whiten   2x2 conv, 3 -> 24 channels, no padding (32x32 -> 31x31); its weights are the
             whitening of the training images' 2x2 patches and stay frozen, its bias trains
    GELU
    block1   conv3x3 -> max-pool 2x2 -> BN -> GELU -> conv3x3 -> BN -> GELU    64 x 15 x 15
    block2   the same                                                         256 x 7 x 7
    block3   the same                                                         256 x 3 x 3
    pool     global max-pool
    head     linear 256 -> classes, no bias, logits x 1/9

The whitening weights: the 12 eigenvectors of the (uncentred) covariance of the training
images' 2x2 patches, each divided by sqrt(eigenvalue + 5e-4), and their negatives (24
filters, so the GELU after them sees both signs). They come from data, so the builder leaves
random ones and ``init_from_data`` sets them: ``fitnets.run`` calls it on a freshly built
network with the first 5,000 preprocessed training images (``models.data_init``).

Convolutions have no bias and start as partial identities (the first ``in_channels`` filters
are Dirac deltas, the rest PyTorch's default), the paper's "identity initialisation";
BatchNorm has eps 1e-12, momentum 0.4 (airbench's 0.6 in its own convention) and a weight
frozen at 1 (only its bias trains). Hint layers: ``whiten``, ``block1``, ``block2``,
``block3`` (the default hint / guided layer: ``block2``).

Training it as airbench does needs the recipe's options (recipes/cifar10-teacher-fast.yaml):
Nesterov SGD, label smoothing 0.2, a 64x lr on BatchNorm biases without 64x their decay
(optim.scale_decay=false), the triangular lr schedule, lookahead, alternating flips with
2-pixel translations, and flip+shift test-time augmentation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WHITEN_EPS = 5e-4  # added to the patch covariance's eigenvalues (airbench's)
DATA_INIT_IMAGES = 5000  # training images the whitening is computed from (airbench's)


def _bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    bn.weight.requires_grad_(False)  # a fixed scale of 1: only the bias trains
    return bn


def _conv(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:cin])  # the first cin filters pass their input through
    return conv


class ConvGroup(nn.Module):
    """conv3x3 -> max-pool 2x2 -> BN -> GELU -> conv3x3 -> BN -> GELU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1, self.norm1 = _conv(cin, cout), _bn(cout)
        self.conv2, self.norm2 = _conv(cout, cout), _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class FastTeacher(nn.Module):
    """airbench94's network (module docstring); ``widths`` of the three blocks."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3,
                 widths: tuple[int, int, int] = (64, 256, 256), scale: float = 1 / 9):
        super().__init__()
        patch = 2
        self.whiten = nn.Conv2d(in_channels, 2 * in_channels * patch * patch, patch)
        self.whiten.weight.requires_grad_(False)  # set from data, then frozen
        with torch.no_grad():
            self.whiten.bias.zero_()
        cin = self.whiten.out_channels
        for i, width in enumerate(widths, start=1):
            setattr(self, f"block{i}", ConvGroup(cin, width))
            cin = width
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(cin, num_classes, bias=False)
        self.scale = scale
        self.input_shape = (in_channels, 32, 32)
        self.num_classes = num_classes
        self.default_hint = self.default_guided = "block2"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.whiten(x))
        x = self.block3(self.block2(self.block1(x)))
        return self.head(self.pool(x).flatten(1)) * self.scale

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Set the whitening filters from preprocessed training images ``x`` (N, C, H, W)."""
        self.whiten.weight.copy_(whitening_filters(x, self.whiten.kernel_size[0]))


def whitening_filters(x: torch.Tensor, patch: int = 2, eps: float = WHITEN_EPS,
                      chunk: int = 500) -> torch.Tensor:
    """(2 C p^2, C, p, p) filters that whiten the p x p patches of images ``x`` (N, C, H, W):
    the eigenvectors of the patches' uncentred covariance, largest eigenvalue first, each
    divided by sqrt(eigenvalue + eps), followed by their negatives. A filter's response over
    the patches then has mean square eigenvalue / (eigenvalue + eps), about 1."""
    c = x.shape[1]
    d = c * patch * patch
    cov = torch.zeros(d, d, dtype=torch.float64, device=x.device)
    count = 0
    for i in range(0, len(x), chunk):  # bounded memory: 5,000 images give 4.8M patches
        p = F.unfold(x[i:i + chunk].double(), patch)  # (n, C p p, positions)
        p = p.transpose(1, 2).reshape(-1, d)
        cov += p.T @ p
        count += len(p)
    values, vectors = torch.linalg.eigh(cov / max(count, 1))  # ascending
    values, vectors = values.flip(0), vectors.flip(1)
    filters = (vectors.T / (values.clamp_min(0) + eps).sqrt()[:, None]).reshape(d, c, patch, patch)
    return torch.cat([filters, -filters]).float()


def cifar_fast_teacher(num_classes: int = 10, in_channels: int = 3,
                       batchnorm: bool = True) -> nn.Module:
    """airbench94's network (widths 64/256/256, ~1.97M parameters for 10 classes); hint
    block2 (256x7x7). BN is always there: ``batchnorm`` only keeps the builders' signature."""
    return FastTeacher(num_classes, in_channels)


MODELS = {"cifar_fast_teacher": cifar_fast_teacher}
