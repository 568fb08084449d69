"""The transformer block shared by the ViT (models/vit.py) and the GPT (models/gpt.py).

Pre-norm, as timm's ``VisionTransformer`` and nanoGPT: ``x + attn(ln(x))``, then
``x + mlp(ln(x))``; multi-head self-attention through torch's
``scaled_dot_product_attention`` (fused kernels where the device has them), causal for a
language model. The module names (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``,
``mlp.0``, ``mlp.2``) are those of the checkpoints both models have always written.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention over (B, T, dim) tokens; ``causal``: a position sees only
    itself and the positions before it."""

    def __init__(self, dim: int, heads: int, causal: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by heads {heads}")
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # (B, h, T, d/h)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x)), the MLP's hidden
    width ``mlp_ratio`` x dim with a GELU."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, causal: bool = False):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, causal)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
