"""The built-in GPT: causal, tied, sized by config keys, its blocks listed and tappable; the
Trainer's perplexity on token logits against a hand-computed value."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fitnets import FitnetsError
from fitnets.cli import main
from fitnets.data.memory import Arrays
from fitnets.data.text import TextData
from fitnets.distill.taps import layer_shapes
from fitnets.models import build_model
from fitnets.trainer import Trainer


def small(**sizes) -> nn.Module:
    torch.manual_seed(0)
    return build_model("gpt", num_classes=50,
                       sizes={"width": 32, "depth": 3, "heads": 4, "context": 16, **sizes})


def test_a_later_token_never_changes_earlier_logits():
    model = small().eval()
    ids = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[:, 9] = (ids[:, 9] + 7) % 50
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert a.shape == (2, 16, 50)
    assert torch.equal(a[:, :9], b[:, :9])  # positions before the change: bit-identical
    assert not torch.allclose(a[:, 9:], b[:, 9:])
    with torch.no_grad():  # a shorter prefix gives the same logits as the whole sequence
        assert torch.allclose(model(ids[:, :5]), a[:, :5], atol=1e-6)


def test_tied_embeddings_sizes_and_defaults():
    model = small(width=48, depth=6, heads=3)
    assert model.head.weight is model.tok_emb.weight
    assert len(model.blocks) == 6 and model.tok_emb.weight.shape == (50, 48)
    assert model.sizes == {"width": 48, "depth": 6, "heads": 3, "context": 16}
    assert model.default_hint == "blocks.2"
    n = sum(p.numel() for p in model.parameters())  # the tied matrix counted once
    assert n == 50 * 48 + 16 * 48 + 6 * (12 * 48 * 48 + 13 * 48) + 2 * 48
    with pytest.raises(ValueError, match="divisible"):
        small(width=30, heads=4)
    with pytest.raises(FitnetsError, match=r"student\.width.*gpt"):
        build_model("mnist_student", sizes={"width": 8}, key="student")


def test_blocks_are_listed_as_hidden_states(capsys):
    shapes = layer_shapes(small(), (16,))
    assert [shapes[f"blocks.{i}"] for i in range(3)] == [(16, 32)] * 3
    assert shapes["head"] == (16, 50)
    assert main(["layers", "gpt"]) == 0
    out = capsys.readouterr().out
    assert "blocks.3" in out and "128x128" in out  # the default: 4 blocks of width 128


def test_perplexity_and_next_token_accuracy_by_hand(tmp_path):
    probs = torch.tensor([0.5, 0.25, 0.125, 0.125])

    class Fixed(nn.Module):  # the same next-token distribution at every position
        def forward(self, x):
            return probs.log().expand(*x.shape, 4)

    y = torch.tensor([[0, 1, 2], [3, 0, 0]])
    x = torch.zeros_like(y)
    arrays = Arrays(x, y)
    data = TextData(train=arrays, val=None, test=arrays, batch_size=2, eval_batch_size=1,
                    unigram_ppl=3.5)
    out = Trainer(tmp_path, data, Fixed(), verbose=False).evaluate(Fixed(), arrays)
    # -log p over the 6 targets: 3 x log 2, then log 4, log 8, log 8
    mean = (3 * math.log(2) + math.log(4) + 2 * math.log(8)) / 6
    assert out["loss"] == pytest.approx(mean)
    assert out["ppl"] == pytest.approx(math.exp(mean))
    assert out["ppl"] == pytest.approx(2 ** (11 / 6))  # (3 + 2 + 3 + 3) bits over 6 tokens
    assert out["acc"] == pytest.approx(3 / 6)  # argmax is token 0: right 3 times of 6
    assert out["chance"] == 3.5
