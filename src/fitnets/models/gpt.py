"""A small GPT for ``data.name=text``: next-token logits at every position, offline.

nanoGPT's layout: token and learned position embeddings, pre-norm blocks (LayerNorm, causal
multi-head self-attention through torch's ``scaled_dot_product_attention(is_causal=True)``,
LayerNorm, a 4x GELU MLP, each in a residual), a final LayerNorm, and an output layer tied
to the token embedding. Input (B, T) int64 ids, T <= ``context``; output (B, T, vocab).
Block outputs are hidden states (B, T, width), named ``blocks.0`` ... ``blocks.{depth-1}``:
the taps for token hints (distill/tokens.py maps them position by position).

``model.name=gpt`` with ``model.width``, ``model.depth``, ``model.heads`` (defaults 128, 4, 4)
sizes it, so a student can be thinner and deeper than its teacher; the run sets ``context``
to data.block_size and the vocabulary to the tokenizer's. GPT-2's initialisation: normal
(std 0.02) weights, zero biases, the residual projections' std divided by sqrt(2 depth).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fitnets.models.transformer import Block

WIDTH, DEPTH, HEADS, CONTEXT = 128, 4, 4, 128  # the defaults of model.width/depth/heads


class GPT(nn.Module):
    causal = True  # models/bert.py's BERT: False (bidirectional attention)
    objective = "causal"  # next-token prediction (BERT: "masked")
    num_prefix_tokens = 0  # every token is a position of the text (token regressors read it)
    input_dtype = torch.long  # token ids (counting and layer listing make dummy ids)

    def __init__(self, vocab: int, width: int = WIDTH, depth: int = DEPTH, heads: int = HEADS,
                 context: int = CONTEXT):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, width)
        self.pos_emb = nn.Parameter(torch.zeros(1, context, width))
        self.blocks = nn.Sequential(*(Block(width, heads, 4.0, causal=self.causal)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tok_emb.weight  # tied: one matrix reads and writes tokens
        self.input_shape = (context,)
        self.num_classes = vocab
        self.sizes = {"width": width, "depth": depth, "heads": heads, "context": context}
        middle = f"blocks.{max(depth // 2 - 1, 0)}"
        self.default_hint = self.default_guided = middle
        self.reset_parameters()

    def reset_parameters(self) -> None:
        depth = len(self.blocks)
        nn.init.normal_(self.pos_emb, std=0.02)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                std = 0.02 / math.sqrt(2 * depth) if name.endswith(("proj", "mlp.2")) else 0.02
                nn.init.normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        if t > self.pos_emb.shape[1]:
            raise ValueError(f"{t} tokens, but this {type(self).__name__} has "
                             f"{self.pos_emb.shape[1]} positions (data.block_size when it "
                             "was built)")
        x = self.tok_emb(ids) + self.pos_emb[:, :t]
        return self.head(self.norm(self.blocks(x)))  # (B, T, vocab)


def gpt(num_classes: int = 257, in_channels: int | None = None, batchnorm: bool = False,
        width: int = WIDTH, depth: int = DEPTH, heads: int = HEADS,
        context: int = CONTEXT) -> GPT:
    """A GPT over ``num_classes`` token ids (``in_channels`` and ``batchnorm`` are accepted
    for the builders' common signature: token ids have no channels, and it has no BN)."""
    return GPT(num_classes, width, depth, heads, context)


MODELS = {"gpt": gpt}
