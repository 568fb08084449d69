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


def soft_target_stats(teacher_logits: torch.Tensor, tau: float) -> dict[str, float]:
    """How sharp the teacher's soft targets P_T^tau are over rows of ``teacher_logits``
    (N, K): ``top``, the mean probability of each row's top class; ``top_at_1``, the same at
    tau 1; ``entropy``, the mean entropy as a fraction of the uniform distribution's, log K
    (1: every row uniform, 0: every row one-hot); ``rows``, how many (a language model's
    (B, T, K) logits: every position a row)."""
    a = teacher_logits.detach().float().flatten(0, -2)
    k = a.shape[-1]
    p = F.softmax(a / tau, dim=1)
    entropy = -(p * p.clamp_min(1e-30).log()).sum(dim=1).mean()
    return {"top": p.max(dim=1).values.mean().item(),
            "top_at_1": F.softmax(a, dim=1).max(dim=1).values.mean().item(),
            "entropy": (entropy / torch.log(torch.tensor(float(k)))).item() if k > 1 else 0.0,
            "classes": k, "rows": a.shape[0]}


FLAT = 0.9  # soft targets whose entropy is above this fraction of the uniform's: nearly flat


def describe_soft_targets(stats: dict[str, float], tau: float) -> str:
    """One line on the teacher's soft targets, with a remark when they are nearly uniform
    (a teacher trained with label smoothing, or with a small output scale, gives such
    targets at the paper's tau 3: the fast CIFAR-10 teacher's top class gets 0.26 at tau 3
    and 0.71 at tau 1)."""
    line = (f"[kd] the teacher's soft targets at tau {tau:g} ({stats['rows']:,} training "
            f"rows): the top class gets {stats['top']:.2f} on average "
            f"({stats['top_at_1']:.2f} at tau 1; uniform: {1 / stats['classes']:.2f}), "
            f"entropy {stats['entropy']:.0%} of the uniform's")
    if stats["entropy"] > FLAT and tau > 1:
        line += (": nearly flat. A teacher trained with label smoothing gives such targets; "
                 "a lower kd.tau sharpens them")
    return line
