"""Losses and the lambda schedule against values worked out by hand from the formulas."""

import math

import pytest
import torch

from fitnets.distill.hint import hint_loss
from fitnets.distill.losses import (
    describe_soft_targets,
    kd_loss,
    soft_cross_entropy,
    soft_target_stats,
    teacher_weight,
)


def _softmax(v):
    e = [math.exp(a) for a in v]
    return [a / sum(e) for a in e]


def test_kd_loss_matches_the_formula_by_hand():
    s, t, tau, lam = [1.0, 0.0], [0.0, 1.0], 2.0, 4.0
    p_t = _softmax([a / tau for a in t])  # [0.3775, 0.6225]
    log_p_s = [math.log(p) for p in _softmax([a / tau for a in s])]
    soft = -sum(a * b for a, b in zip(p_t, log_p_s))
    hard = -math.log(_softmax(s)[0])  # label 0
    assert soft == pytest.approx(0.78531, abs=1e-4)  # by pencil, 5 digits
    total, h, so = kd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([0]),
                           lam=lam, tau=tau)
    assert h.item() == pytest.approx(hard, rel=1e-6)
    assert so.item() == pytest.approx(soft, rel=1e-6)
    assert total.item() == pytest.approx(hard + lam * soft, rel=1e-6)
    total_sq, _, _ = kd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([0]),
                             lam=lam, tau=tau, tau_squared=True)
    assert total_sq.item() == pytest.approx(hard + lam * tau * tau * soft, rel=1e-6)


def test_kd_loss_averages_over_the_batch_and_lambda_zero_is_plain_cross_entropy():
    s = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    t = torch.tensor([[0.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
    y = torch.tensor([0, 2])
    total, hard, _ = kd_loss(s, t, y, lam=0.0, tau=3.0)
    by_hand = (-math.log(_softmax([2, 0, -1])[0]) - math.log(_softmax([0, 1, 0])[2])) / 2
    assert total.item() == pytest.approx(by_hand, rel=1e-6)
    assert hard.item() == pytest.approx(by_hand, rel=1e-6)


def test_soft_cross_entropy_is_minimal_when_the_student_copies_the_teacher():
    t = torch.tensor([[0.3, -1.2, 2.0]])
    same = soft_cross_entropy(t, t, 3.0).item()
    entropy = -sum(p * math.log(p) for p in _softmax([v / 3 for v in t[0].tolist()]))
    assert same == pytest.approx(entropy, rel=1e-6)
    assert soft_cross_entropy(t, torch.tensor([[2.0, 0.0, 0.0]]), 3.0).item() > same


def test_kd_loss_is_computed_in_fp32_from_bf16_logits():
    s = torch.tensor([[1.0, 0.0]], dtype=torch.bfloat16)
    total, _, _ = kd_loss(s, s, torch.tensor([0]), lam=1.0, tau=3.0)
    assert total.dtype == torch.float32


def test_hint_loss_paper_reduction_is_half_the_sum_per_example_averaged():
    pred = torch.tensor([[1.0, 2.0, 2.0], [0.0, 0.0, 1.0]])
    hint = torch.zeros(2, 3)
    # example sums of squares 9 and 1 -> halves 4.5 and 0.5 -> batch mean 2.5
    assert hint_loss(pred, hint).item() == pytest.approx(2.5)
    # per-element mean: (1 + 4 + 4 + 1) / 6
    assert hint_loss(pred, hint, "mean").item() == pytest.approx(10 / 6)


def test_hint_loss_sums_over_every_feature_of_a_feature_map():
    pred = torch.ones(4, 2, 3, 3)
    hint = torch.zeros(4, 2, 3, 3)
    assert hint_loss(pred, hint).item() == pytest.approx(0.5 * 18)
    with pytest.raises(ValueError):
        hint_loss(pred, hint, "sum")


@pytest.mark.parametrize(
    "epoch,expected",
    [(1, 4.0), (4, 4.0), (5, 4 - 4 / 146), (6, 4 - 2 * 4 / 146), (149, 4 - 145 * 4 / 146),
     (150, 0.0), (500, 0.0)],
)
def test_mnist_schedule_by_hand(epoch, expected):
    got = teacher_weight(epoch, init=4.0, start=5, saturate=150, final=0.0)
    assert got == pytest.approx(expected)


def test_cifar_schedule_ends_near_1_85_after_288_epochs():
    got = teacher_weight(288, init=4.0, start=5, saturate=400, final=1.0)
    assert got == pytest.approx(4 - 3 / 396 * 284)
    assert round(got, 2) == 1.85


def test_schedule_is_monotone_and_never_negative():
    values = [teacher_weight(e, init=1.0, start=2, saturate=10, final=-3.0) for e in range(1, 20)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert min(values) == 0.0


def test_soft_target_stats_by_hand():
    # two classes, logits (ln 3, 0): P^1 = (3/4, 1/4); P^2 = (sqrt 3, 1) / (1 + sqrt 3)
    a = torch.tensor([[math.log(3.0), 0.0], [0.0, math.log(3.0)]])
    s1 = soft_target_stats(a, tau=1.0)
    assert s1["top"] == pytest.approx(0.75) and s1["top_at_1"] == pytest.approx(0.75)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert s1["entropy"] == pytest.approx(h / math.log(2)) and s1["classes"] == 2
    s2 = soft_target_stats(a, tau=2.0)
    assert s2["top"] == pytest.approx(math.sqrt(3) / (1 + math.sqrt(3)))
    assert s2["top_at_1"] == pytest.approx(0.75)
    # a language model's (B, T, V) logits: every position a row; equal logits are uniform
    flat = soft_target_stats(torch.zeros(2, 3, 5), tau=3.0)
    assert flat["top"] == pytest.approx(0.2) and flat["entropy"] == pytest.approx(1.0)
    assert (s1["rows"], flat["rows"]) == (2, 6)


def test_describe_soft_targets_says_when_they_are_nearly_flat():
    sharp = describe_soft_targets(soft_target_stats(torch.tensor([[8.0, 0.0, 0.0]] * 64), 3.0),
                                  3.0)
    assert "tau 3 (64 training rows): the top class gets 0.88" in sharp
    assert "(1.00 at tau 1; uniform: 0.33)" in sharp and "nearly flat" not in sharp
    # the fast CIFAR-10 teacher's kind of logits: a range of about 4 (label smoothing)
    a = torch.tensor([[3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    flat = describe_soft_targets(soft_target_stats(a, 3.0), 3.0)
    assert "nearly flat" in flat and "a lower kd.tau sharpens them" in flat
    # the same logits at tau 1 are not called flat: the remark is about the temperature
    assert "nearly flat" not in describe_soft_targets(soft_target_stats(a, 1.0), 1.0)
