"""batches(): every example exactly once per epoch, seeded shuffles, drop_last."""

from __future__ import annotations

import pytest
import torch

from fitnets.data import Split, batches
from fitnets.errors import FitnetsError


def split(n=103) -> Split:
    return Split(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone(),
                 torch.arange(n))


@pytest.mark.parametrize("shuffle", [False, True])
def test_each_example_once_per_epoch(shuffle):
    s = split()
    g = torch.Generator().manual_seed(0)
    got = list(batches(s, 10, shuffle=shuffle, generator=g))
    assert [len(y) for _, y in got] == [10] * 10 + [3]
    ys = torch.cat([y for _, y in got])
    assert sorted(ys.tolist()) == list(range(103))
    for x, y in got:  # images stay paired with their labels
        assert torch.equal(x[:, 0, 0, 0].long(), y)
    assert (ys.tolist() != list(range(103))) == shuffle


def test_seeded_shuffle_repeats_and_epochs_differ():
    s = split()
    a = [y for _, y in batches(s, 16, shuffle=True, generator=torch.Generator().manual_seed(5))]
    b = [y for _, y in batches(s, 16, shuffle=True, generator=torch.Generator().manual_seed(5))]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    g = torch.Generator().manual_seed(5)
    e1 = torch.cat([y for _, y in batches(s, 16, shuffle=True, generator=g)])
    e2 = torch.cat([y for _, y in batches(s, 16, shuffle=True, generator=g)])
    assert not torch.equal(e1, e2)


def test_drop_last_and_bad_batch_size():
    got = list(batches(split(), 10, shuffle=False, drop_last=True))
    assert len(got) == 10 and all(len(y) == 10 for _, y in got)
    with pytest.raises(FitnetsError, match="batch_size"):
        next(batches(split(), 0, shuffle=False))
