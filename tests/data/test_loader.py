"""In-memory batches (memory.Data): every example exactly once per epoch, images paired with
their labels, seeded shuffles that repeat, evaluation in order."""

from __future__ import annotations

import pytest
import torch

from fitnets.data.memory import Arrays, Data


def data(n=103, batch_size=10) -> Data:
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()
    arrays = Arrays(x, torch.arange(n))
    return Data(arrays, None, arrays, batch_size=batch_size, eval_batch_size=batch_size)


def test_each_example_once_per_epoch_paired_with_its_label():
    got = list(data().train_batches(torch.Generator().manual_seed(0)))
    assert [len(b) for b in got] == [10] * 10 + [3]
    ys = torch.cat([b.y for b in got])
    assert sorted(ys.tolist()) == list(range(103)) and ys.tolist() != list(range(103))
    for b in got:  # images stay paired with their labels, and idx says their rows
        assert torch.equal(b.x[:, 0, 0, 0].long(), b.y) and torch.equal(b.idx, b.y)


def test_seeded_shuffle_repeats_and_epochs_differ():
    d = data(batch_size=16)
    a = [b.y for b in d.train_batches(torch.Generator().manual_seed(5))]
    b = [b.y for b in d.train_batches(torch.Generator().manual_seed(5))]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    g = torch.Generator().manual_seed(5)
    e1 = torch.cat([b.y for b in d.train_batches(g)])
    e2 = torch.cat([b.y for b in d.train_batches(g)])
    assert not torch.equal(e1, e2)


def test_a_resumed_epoch_starts_at_its_batch_with_the_generator_where_it_was():
    d = data(batch_size=16)
    g = torch.Generator().manual_seed(3)
    whole = [b.y for b in d.train_batches(g)]
    after = torch.rand(1, generator=g)
    g = torch.Generator().manual_seed(3)
    rest = [b.y for b in d.train_batches(g, start=4)]
    assert all(torch.equal(p, q) for p, q in zip(whole[4:], rest)) and len(rest) == 3
    assert torch.equal(torch.rand(1, generator=g), after)


@pytest.mark.parametrize("rows", [None, (5, 37)])
def test_eval_batches_in_order(rows):
    d = data()
    got = list(d.eval_batches(d.test, rows))
    lo, hi = rows or (0, 103)
    assert torch.equal(torch.cat([b.y for b in got]), torch.arange(lo, hi))
    assert all(b.idx is None for b in got)
