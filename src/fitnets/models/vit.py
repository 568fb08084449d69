"""Small vision transformers for 32x32 images (patch 4: an 8x8 grid of 64 patch tokens plus
a CLS token), to distill transformer students from transformer or CNN teachers.

The layout is timm's ``VisionTransformer`` reduced to what small images need: a patch
embedding (a stride-4 convolution), a CLS token and learned position embeddings, pre-norm
blocks (LayerNorm, multi-head self-attention, LayerNorm, a GELU MLP, each in a residual),
a final LayerNorm and a linear head on the CLS token. Block outputs are tokens (N, 65, D),
named ``blocks.0`` ... ``blocks.{depth-1}``: the taps for token hints (distill/tokens.py).

Presets (``model.name``):

* ``vit_teacher``: wide and shallow, D 192, 4 blocks, 3 heads (about 1.2M parameters).
* ``vit_student``: thin and deep, D 64, 8 blocks, 2 heads (about 0.27M), the FitNets shape.
* ``vit_teacher_small`` / ``vit_student_small``: D 96 x 4 / D 32 x 8, for quick runs.

Each sets ``default_hint`` / ``default_guided`` to the output of its middle block, as the
paper guides a middle layer. Other sizes: ``fitnets.models.vit:vit`` with keywords, from a
builder of your own (``model.name=my_models.py:my_vit``).
"""

from __future__ import annotations

import torch
from torch import nn

from fitnets.models.transformer import Block


class ViT(nn.Module):
    num_prefix_tokens = 1  # the CLS token (read by the token regressors, as timm's)

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 2.0,
                 num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 patch: int = 4):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not a multiple of patch {patch}")
        grid = image_size // patch
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.input_shape = (in_channels, image_size, image_size)
        self.num_classes = num_classes
        middle = f"blocks.{max(depth // 2 - 1, 0)}"
        self.default_hint = self.default_guided = middle
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm's ViT initialisation: truncated normal (std 0.02) for the position embedding,
        CLS token and linear weights, zero biases, LayerNorm weight 1."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, grid*grid, D), row-major
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def vit(dim: int = 64, depth: int = 8, heads: int = 2, mlp_ratio: float = 2.0,
        num_classes: int = 10, in_channels: int = 3, image_size: int = 32, patch: int = 4,
        batchnorm: bool = False) -> ViT:
    """A ViT of any size (``batchnorm`` is accepted for the builders' common signature)."""
    return ViT(dim, depth, heads, mlp_ratio, num_classes, in_channels, image_size, patch)


def _preset(name: str, dim: int, depth: int, heads: int, doc: str):
    def build(num_classes: int = 10, in_channels: int = 3, batchnorm: bool = False) -> ViT:
        return vit(dim, depth, heads, num_classes=num_classes, in_channels=in_channels)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = doc
    return build


MODELS = {
    "vit_teacher": _preset("vit_teacher", 192, 4, 3,
                           "ViT for 32x32, wide and shallow: D 192, 4 blocks; hint blocks.1."),
    "vit_student": _preset("vit_student", 64, 8, 2,
                           "ViT for 32x32, thin and deep: D 64, 8 blocks; guided blocks.3."),
    "vit_teacher_small": _preset("vit_teacher_small", 96, 4, 2,
                                 "ViT for 32x32: D 96, 4 blocks; hint blocks.1."),
    "vit_student_small": _preset("vit_student_small", 32, 8, 2,
                                 "ViT for 32x32: D 32, 8 blocks; guided blocks.3."),
}
