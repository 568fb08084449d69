"""The paper's losses and lambda schedule, as pure functions.

Shapes: logits (N, K), labels (N,), feature maps (N, ...). Losses are computed in fp32
whatever the autocast dtype, because soft targets at tau=3 and squared hint errors lose
precision in bf16/fp16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(target_logits: torch.Tensor, logits: torch.Tensor,
                       tau: float, student_tau: float | None = None) -> torch.Tensor:
    """H(P_T^tau, P_S^tau') = -sum_k softmax(a_T/tau)_k log softmax(a_S/tau')_k, batch mean;
    tau' = ``student_tau`` (default: tau)."""
    p_t = F.softmax(target_logits.float() / tau, dim=1)
    log_p_s = F.log_softmax(logits.float() / (tau if student_tau is None else student_tau), dim=1)
    return -(p_t * log_p_s).sum(dim=1).mean()


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    lam: float,
    tau: float,
    tau_squared: bool = False,
    student_tau: str = "paper",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_KD = H(y, P_S) + lambda * H(P_T^tau, P_S^tau)  [* tau^2 on the soft term if asked].

    ``student_tau="one"`` gives what the authors' code trained, H(P_T^tau, P_S^1): their
    KDCost (adri-romsor/FitNets costs/KDCost.py) divides the teacher's softmax parameters by
    tau for good (lines 29-31), but for the student it divides, builds the symbolic graph and
    restores the values (lines 109-113) before any Theano function runs; the graph reads the
    shared variables, so the student's softmax runs at temperature 1.
    Returns (total, hard term, soft term); the soft term is reported without lambda.
    """
    if student_tau not in ("paper", "one"):
        raise ValueError(f"student_tau must be 'paper' or 'one', got {student_tau!r}")
    hard = F.cross_entropy(student_logits.float(), labels)
    soft = soft_cross_entropy(teacher_logits, student_logits, tau,
                              1.0 if student_tau == "one" else None)
    weight = lam * (tau * tau if tau_squared else 1.0)
    return hard + weight * soft, hard, soft


def hint_loss(prediction: torch.Tensor, hint: torch.Tensor,
              reduction: str = "paper") -> torch.Tensor:
    """L_HT = 1/2 ||u_h - r(v_g)||^2.

    paper: squares summed over every feature of an example, halved, then averaged over the
    batch (the authors' reduction). mean: the per-element mean (what MSELoss gives).
    """
    diff = prediction.float() - hint.float()
    if reduction == "paper":
        return 0.5 * diff.pow(2).flatten(1).sum(dim=1).mean()
    if reduction == "mean":
        return diff.pow(2).mean()
    if reduction == "authors":
        # The authors' HintCost (adri-romsor/FitNets costs/HintCost.py lines 77-80):
        # 0.5 * (hint - out)**2, T.sum(axis=1), T.mean(): on pylearn2's ('c', 0, 1, 'b')
        # maps axis 1 is the rows, so rows are summed and channels, columns and the batch
        # averaged. NCHW: sum over dim 2. On (N, F) outputs (fc regressor) it is the paper's.
        sq = 0.5 * diff.pow(2)
        return sq.sum(dim=2 if sq.dim() == 4 else 1).mean()
    raise ValueError(f"hint loss reduction must be 'paper', 'mean' or 'authors', "
                     f"got {reduction!r}")


def teacher_weight(epoch: int, *, init: float, start: int, saturate: int, final: float) -> float:
    """The authors' lambda schedule ("teacher decay over epoch") for 1-based ``epoch``.

    lambda = init before epoch ``start``; from ``start`` it falls by
    step = (init - final) / (saturate - start + 1) per epoch, i.e.
    init - step * (epoch - start + 1); from ``saturate`` on it is ``final``; never below 0.
    (pylearn2 counts the monitor call before the first epoch, so its counter during
    epoch e is e: this matches the authors' extension exactly.)
    """
    if epoch < start:
        value = init
    elif epoch < saturate:
        step = (init - final) / (saturate - start + 1)
        value = init - step * (epoch - start + 1)
    else:
        value = final
    return max(value, 0.0)
