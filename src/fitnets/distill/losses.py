"""The KD loss and the lambda schedule, as pure functions (the hint loss is beside its stage,
in distill/hint.py).

Shapes: logits (N, K), labels (N,), feature maps (N, ...). Losses are computed in fp32
whatever the autocast dtype, because soft targets at tau=3 and squared hint errors lose
precision in bf16/fp16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(target_logits: torch.Tensor, logits: torch.Tensor,
                       tau: float, student_tau: float | None = None,
                       keep: torch.Tensor | None = None) -> torch.Tensor:
    """H(P_T^tau, P_S^tau') = -sum_k softmax(a_T/tau)_k log softmax(a_S/tau')_k, batch mean;
    tau' = ``student_tau`` (default: tau); ``keep`` (N,) bool: the mean over those rows only
    (a masked LM's masked positions)."""
    p_t = F.softmax(target_logits.float() / tau, dim=1)
    log_p_s = F.log_softmax(logits.float() / (tau if student_tau is None else student_tau), dim=1)
    per_row = -(p_t * log_p_s).sum(dim=1)
    if keep is None:
        return per_row.mean()
    keep = keep.float()
    return (per_row * keep).sum() / keep.sum().clamp_min(1.0)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    lam: float,
    tau: float,
    tau_squared: bool = False,
    student_tau: str = "paper",
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_KD = H(y, P_S) + lambda * H(P_T^tau, P_S^tau)  [* tau^2 on the soft term if asked].

    ``student_tau="one"`` gives what the authors' code trained, H(P_T^tau, P_S^1): their
    KDCost (adri-romsor/FitNets costs/KDCost.py) divides the teacher's softmax parameters by
    tau for good (lines 29-31), but for the student it divides, builds the symbolic graph and
    restores the values (lines 109-113) before any Theano function runs; the graph reads the
    shared variables, so the student's softmax runs at temperature 1.
    Returns (total, hard term, soft term); the soft term is reported without lambda.
    ``keep``: the rows both terms count (a masked LM's masked positions, whose labels are
    the only ones not -100: cross_entropy's ignore_index leaves the others out of the hard
    term); None: every row.
    """
    if student_tau not in ("paper", "one"):
        raise ValueError(f"student_tau must be 'paper' or 'one', got {student_tau!r}")
    hard = F.cross_entropy(student_logits.float(), labels)
    soft = soft_cross_entropy(teacher_logits, student_logits, tau,
                              1.0 if student_tau == "one" else None, keep=keep)
    weight = lam * (tau * tau if tau_squared else 1.0)
    return hard + weight * soft, hard, soft


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
