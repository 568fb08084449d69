"""A masked language model's masks (data/text.py): BERT's rule in its proportions, labels
ignored off the chosen positions, validation / test masks fixed by split and row, training
masks from the run's generator alike in memory and stream mode; the masked losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fitnets.config import make_config
from fitnets.data.prepare import prepare
from fitnets.data.text import (
    IGNORE,
    ByteTokenizer,
    Masking,
    apply_masks,
    draw_masks,
    fixed_masks,
    masking_for,
)
from fitnets.distill.losses import kd_loss
from fitnets.errors import FitnetsError

BYTE = Masking(mask_id=257, draw=257, vocab=258)


def test_the_bert_rule_in_its_proportions_and_labels_off_the_chosen_positions():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (500, 200), generator=g)
    inputs, labels = draw_masks(x, g, BYTE)
    chosen = labels != IGNORE
    assert chosen.float().mean().item() == pytest.approx(0.15, abs=0.005)
    assert torch.equal(labels[chosen], x[chosen])  # the original ids, where chosen
    assert (labels[~chosen] == IGNORE).all()
    assert torch.equal(inputs[~chosen], x[~chosen])  # nothing else is touched
    n = chosen.sum().item()
    masked = (inputs[chosen] == 257).sum().item() / n
    kept = (inputs[chosen] == x[chosen]).sum().item() / n
    randomised = 1 - masked - kept
    assert masked == pytest.approx(0.8, abs=0.01)
    # a random id equal to the original counts as kept: 10% + 10% / 257
    assert kept == pytest.approx(0.1 + 0.1 / 257, abs=0.01)
    assert randomised == pytest.approx(0.1 - 0.1 / 257, abs=0.01)
    assert inputs.max().item() <= 257  # random ids from the corpus's own 257


def test_every_row_predicts_at_least_one_token():
    x = torch.arange(6).repeat(3, 1)
    u = torch.tensor([[0.9, 0.5, 0.3, 0.7, 0.8, 0.6]] * 2 + [[0.9, 0.1, 0.3, 0.05, 0.8, 0.6]])
    r = torch.zeros_like(u)  # chosen -> the mask id
    inputs, labels = apply_masks(x, u, r, torch.zeros_like(x), BYTE)
    assert labels[0].tolist() == [IGNORE, IGNORE, 2, IGNORE, IGNORE, IGNORE]  # its lowest u
    assert labels[2].tolist() == [IGNORE, 1, IGNORE, 3, IGNORE, IGNORE]
    assert inputs[2].tolist() == [0, 257, 2, 257, 4, 5]


def test_eval_masks_are_fixed_by_split_and_row():
    x = torch.randint(0, 256, (6, 32), generator=torch.Generator().manual_seed(1))
    a = fixed_masks(x, "val", np.arange(6), BYTE)
    b = fixed_masks(x, "val", np.arange(6), BYTE)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    # row 3 masked alone (another batch) is masked as within the split
    alone = fixed_masks(x[3:4], "val", np.array([3]), BYTE)
    assert torch.equal(alone[0][0], a[0][3]) and torch.equal(alone[1][0], a[1][3])
    test = fixed_masks(x, "test", np.arange(6), BYTE)
    assert not torch.equal(test[1], a[1])  # another split, other positions


def test_the_mask_id_of_each_tokenizer():
    m = masking_for(ByteTokenizer())
    assert (m.mask_id, m.draw, m.vocab) == (257, 257, 258)

    class NoMask:
        name = "dir"
        vocab_size = 10
        tok = type("T", (), {"mask_token_id": None})()

    with pytest.raises(FitnetsError, match="no mask token"):
        masking_for(NoMask())


def corpus(folder):
    folder.mkdir(parents=True)
    for i in range(12):
        (folder / f"{i}.txt").write_text(f"document {i}: " + "abcdefgh"[i % 8] * (60 + 9 * i))
    return folder


def test_memory_and_stream_mode_mask_alike(tmp_path):
    data = corpus(tmp_path / "c")
    args = ["device=cpu", "data.name=text", f"data.path={data}", f"data.root={tmp_path}",
            "data.block_size=16", "data.batch_size=4", "data.eval_batch_size=3"]
    mem = prepare(make_config(None, [*args, "data.mode=memory"]).data, torch.device("cpu"),
                  masked=True)
    stream = prepare(make_config(None, [*args, "data.mode=stream"]).data,
                     torch.device("cpu"), masked=True)
    assert mem.num_classes == stream.num_classes == 258 and mem.masking == BYTE
    assert mem.data.train_inputs() is None  # no teacher bank over rows masked afresh
    a = list(mem.data.train_batches(torch.Generator().manual_seed(3)))
    b = list(stream.data.train_batches(torch.Generator().manual_seed(3)))
    assert len(a) == len(b) > 2
    for p, q in zip(a, b):
        assert torch.equal(p.x, q.x) and torch.equal(p.y, q.y) and torch.equal(p.idx, q.idx)
        assert ((p.y != IGNORE).sum(1) >= 1).all()
    assert any((p.x == 257).any() for p in a)
    # a resumed epoch (from batch 2) gets the uninterrupted epoch's masks
    again = list(mem.data.train_batches(torch.Generator().manual_seed(3), start=2))
    assert all(torch.equal(p.x, q.x) and torch.equal(p.y, q.y) for p, q in zip(again, a[2:]))
    for split in ("val", "test"):
        m = torch.cat([bt.y for bt in mem.data.eval_batches(getattr(mem.data, split))])
        s = torch.cat([bt.y for bt in stream.data.eval_batches(getattr(stream.data, split))])
        assert torch.equal(m, s)
        assert torch.equal(torch.cat([bt.x for bt in mem.data.eval_batches(
            getattr(mem.data, split))]), getattr(mem.data, split).x)
    # a causal run of the same corpus: 257 ids, next-token targets (one token file)
    causal = prepare(make_config(None, [*args, "data.mode=memory"]).data,
                     torch.device("cpu"))
    assert causal.num_classes == 257 and causal.masking is None
    assert torch.equal(causal.data.train.x, mem.data.train.x)


def test_the_masked_losses_are_cross_entropies_over_the_chosen_positions():
    g = torch.Generator().manual_seed(0)
    logits, t_logits = torch.randn(40, 11, generator=g), torch.randn(40, 11, generator=g)
    y = torch.randint(0, 11, (40,), generator=g)
    keep = torch.rand(40, generator=g) < 0.3
    labels = torch.where(keep, y, IGNORE)
    total, hard, soft = kd_loss(logits, t_logits, labels, lam=2.0, tau=3.0, keep=keep)
    log_p = F.log_softmax(logits, 1)
    want_hard = -log_p[keep].gather(1, y[keep, None]).mean()
    p_t = F.softmax(t_logits[keep] / 3, 1)
    want_soft = -(p_t * F.log_softmax(logits[keep] / 3, 1)).sum(1).mean()
    assert hard.item() == pytest.approx(want_hard.item(), rel=1e-6)
    assert soft.item() == pytest.approx(want_soft.item(), rel=1e-6)
    assert total.item() == pytest.approx((want_hard + 2 * want_soft).item(), rel=1e-6)
    # back-propagation's loss (LabelStage: cross_entropy's ignore_index) is the same mean
    assert F.cross_entropy(logits, labels).item() == pytest.approx(want_hard.item(), rel=1e-6)
