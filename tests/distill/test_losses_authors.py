"""The losses as the authors' code executed them (kd.student_tau=one, hints.reduction=authors)
and their stage-1 regressor (hints.regressor_init=authors, its max-norm), by hand."""

import math

import pytest
import torch

from fitnets.config import make_config
from fitnets.distill.hint import HintModule, hint_loss, hint_reduction
from fitnets.distill.losses import kd_loss
from fitnets.distill.regressor import build_regressor
from fitnets.distill.regressor_init import init_regressor_
from fitnets.models import build_model
from fitnets.optim import max_norm_fn


def _softmax(v):
    e = [math.exp(a) for a in v]
    return [a / sum(e) for a in e]


def test_kd_student_tau_one_by_hand():
    s, t, tau, lam = [1.0, 2.0, 0.5], [3.0, 0.0, 1.5], 3.0, 4.0
    p_t = _softmax([a / tau for a in t])
    p_s1 = _softmax(s)  # the student at temperature 1: the authors' executed graph
    hard = -math.log(p_s1[1])
    soft = -sum(pt * math.log(ps) for pt, ps in zip(p_t, p_s1))
    total, h, so = kd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([1]),
                           lam=lam, tau=tau, student_tau="one")
    assert h.item() == pytest.approx(hard)
    assert so.item() == pytest.approx(soft)
    assert total.item() == pytest.approx(hard + lam * soft)
    # the paper's default softens the student too: a different number
    p_s3 = _softmax([a / tau for a in s])
    paper = -sum(pt * math.log(ps) for pt, ps in zip(p_t, p_s3))
    _, _, so_paper = kd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([1]),
                             lam=lam, tau=tau)
    assert so_paper.item() == pytest.approx(paper)
    assert abs(paper - soft) > 0.1


def test_kd_student_tau_one_gradient_pulls_p_s1_towards_p_t_tau():
    # d soft / d a_S = P_S^1 - P_T^tau (no 1/tau factor, unlike the paper's form)
    s = torch.tensor([[1.0, 2.0, 0.5]], requires_grad=True)
    t = torch.tensor([[3.0, 0.0, 1.5]])
    _, _, soft = kd_loss(s, t, torch.tensor([0]), lam=1.0, tau=3.0, student_tau="one")
    soft.backward()
    expected = torch.softmax(s.detach(), 1) - torch.softmax(t / 3.0, 1)
    assert torch.allclose(s.grad, expected, atol=1e-6)


def test_kd_student_tau_rejects_other_values():
    with pytest.raises(ValueError, match="student_tau"):
        kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]), lam=1, tau=3,
                student_tau="three")


def test_hint_loss_authors_reduction_by_hand():
    # N=2, C=2, H=3, W=2: sum over rows (H), mean over N, C, W
    torch.manual_seed(0)
    pred, hint = torch.randn(2, 2, 3, 2), torch.randn(2, 2, 3, 2)
    d2 = (pred - hint).pow(2)
    by_hand = 0.0
    for n in range(2):
        for c in range(2):
            for w in range(2):
                by_hand += 0.5 * sum(d2[n, c, h, w].item() for h in range(3))
    by_hand /= 2 * 2 * 2
    assert hint_loss(pred, hint, "authors").item() == pytest.approx(by_hand, rel=1e-6)
    # = the paper's reduction divided by C * W
    assert hint_loss(pred, hint, "authors").item() == pytest.approx(
        hint_loss(pred, hint, "paper").item() / (2 * 2), rel=1e-6)


def test_hint_loss_authors_reduction_on_vectors_is_the_papers():
    pred, hint = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    assert hint_loss(pred, hint, "authors").item() == pytest.approx(0.5 * (1 + 4 + 4))


def test_hints_reduction_authors_reaches_stage_one():
    cfg = make_config(None, ["hints.reduction=authors"])
    assert hint_reduction(cfg, joint=False) == "authors"


def test_regressor_init_authors_is_uniform_005_with_zero_biases():
    torch.manual_seed(0)
    reg = init_regressor_(build_regressor((16, 4, 4), (48, 4, 4), "conv"), "authors")
    w = reg.core.weight
    assert w.abs().max().item() <= 0.05 and w.abs().max().item() > 0.045
    assert w.std().item() == pytest.approx(0.05 / math.sqrt(3), rel=0.1)  # U(-a, a)
    assert reg.core.bias.eq(0).all()
    torch_default = build_regressor((16, 4, 4), (48, 4, 4), "conv")
    assert init_regressor_(torch_default, "torch") is torch_default
    with pytest.raises(ValueError):
        init_regressor_(torch_default, "glorot")


def test_recipe_patterns_miss_the_regressor_unless_named():
    student = build_model("mnist_student")
    reg = build_regressor((16, 4, 4), (48, 4, 4), "conv")
    module = HintModule(student, reg, "conv4")
    with torch.no_grad():
        reg.core.weight.fill_(1.0)  # each filter's norm = sqrt(16) = 4
    paper_patterns = {"conv[12].*weight": 0.9, "conv[3-6].*weight": 1.9365}
    max_norm_fn(module, paper_patterns, prefix="student.")()
    assert reg.core.weight.eq(1.0).all()  # missed: the old recipes never constrained it
    max_norm_fn(module, {**paper_patterns, "regressor.*weight": 0.9}, prefix="student.")()
    norms = reg.core.weight.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 0.9))
