"""A small BERT-style masked language model for ``data.name=text``, offline.

models/gpt.py's GPT with bidirectional attention: token and learned position embeddings,
pre-norm blocks (models/transformer.py's ``Block`` with ``causal=False``: every position
sees the whole block), a final LayerNorm and an output layer tied to the token embedding.
Input (B, T) int64 ids (some replaced by the mask id, data/text.py's ``apply_masks``),
output (B, T, vocab): at each position the logits of the token that was there. Its blocks
are hint layers ``blocks.0`` ... as the GPT's. ``model.name=bert`` with ``model.width``,
``model.depth``, ``model.heads`` (defaults 128, 4, 4); a run whose models are masked LMs
trains the masked objective (``objective = "masked"``).
"""

from __future__ import annotations

from fitnets.models.gpt import CONTEXT, DEPTH, GPT, HEADS, WIDTH


class BERT(GPT):
    causal = False  # bidirectional: a masked position reads both sides
    objective = "masked"  # predicts the masked tokens (data/text.py: BERT's 15% rule)


def bert(num_classes: int = 258, in_channels: int | None = None, batchnorm: bool = False,
         width: int = WIDTH, depth: int = DEPTH, heads: int = HEADS,
         context: int = CONTEXT) -> BERT:
    """A BERT over ``num_classes`` token ids (the byte tokenizer's 257 and its mask id by
    default; ``in_channels`` and ``batchnorm`` are accepted for the builders' common
    signature)."""
    return BERT(num_classes, width, depth, heads, context)


MODELS = {"bert": bert}
