"""The teacher bank's top-k logits (perf.teacher_topk): what it keeps, the soft targets it
gives, and runs on text that read it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fitnets.checkpoint import load_weights
from fitnets.config import make_config
from fitnets.distill.losses import soft_cross_entropy
from fitnets.distill.teacher_cache import pack_topk, unpack_topk
from fitnets.errors import FitnetsError
from fitnets.run import run


def test_unpacked_top_k_is_the_teachers_distribution_renormalised_over_its_top_k():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)  # (B, T, vocab)
    packed = pack_topk(logits, 4)
    assert packed.shape == (3, 5, 8) and packed.dtype == torch.float32
    dense = unpack_topk(packed, 11)
    p = F.softmax(dense, dim=-1)
    top = logits.topk(4, dim=-1)
    by_hand = torch.zeros_like(logits).scatter_(-1, top.indices, F.softmax(top.values, -1))
    assert torch.allclose(p, by_hand, atol=1e-7)
    assert ((p > 0).sum(-1) == 4).all()
    # the soft term of KD against it: -sum over the top 4 of p_t log q_s, by hand
    student = torch.randn(15, 11)
    soft = soft_cross_entropy(dense.reshape(15, 11), student, tau=1.0)
    assert soft == pytest.approx(-(by_hand.reshape(15, 11)
                                   * F.log_softmax(student, -1)).sum(-1).mean().item(), 1e-6)
    # every logit kept: exactly the teacher's own
    assert torch.equal(unpack_topk(pack_topk(logits, 11), 11), logits)


def corpus(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i in range(20):
        (folder / f"{i}.txt").write_text(" ".join(f"{w} {w[::-1]}" for w in
                                                  ["abc", "defg", "hij", "klmno"] * (8 + i)))
    return folder


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory):
    """A tiny GPT teacher trained on a tiny corpus, and the overrides of a KD student."""
    root = tmp_path_factory.mktemp("topk")
    data = [f"data.path={corpus(root / 'c')}", f"data.root={root}", "data.name=text",
            "data.block_size=16", "data.batch_size=8", "data.train_limit=96", "device=cpu",
            "perf.precision=fp32"]
    teacher = root / "teacher"
    run(make_config(None, [*data, "model.name=gpt", "model.width=16", "model.depth=2",
                           "model.heads=2", "train.epochs=2", "train.optim.name=adam",
                           "train.optim.lr=0.01", f"out={teacher}"]), "train", teacher,
        verbose=False)
    student = [*data, "method=kd", "teacher.name=gpt", "teacher.width=16", "teacher.depth=2",
               "teacher.heads=2", f"teacher.weights={teacher}", "student.name=gpt",
               "student.width=8", "student.depth=3", "student.heads=2", "train.epochs=2",
               "train.optim.name=adam", "train.optim.lr=0.01", "kd.tau=2"]
    return root, student


def _distill(root: Path, student: list[str], name: str, extra: list[str]):
    out = root / name
    summary = run(make_config(None, [*student, *extra, f"out={out}"]), "distill", out,
                  verbose=False)
    return summary, load_weights(out / "model.pt")["state_dict"], out


def test_a_bank_of_every_logit_as_top_k_trains_exactly_as_the_dense_bank(text_runs):
    root, student = text_runs
    _, dense, _ = _distill(root, student, "dense", ["perf.teacher_cache=memory"])
    _, topk, out = _distill(root, student, "top257", ["perf.teacher_cache=memory",
                                                      "perf.teacher_topk=257"])
    assert all(torch.equal(dense[k], topk[k]) for k in dense)
    _, top8, _ = _distill(root, student, "top8", ["perf.teacher_cache=memory",
                                                  "perf.teacher_topk=8"])
    assert any(not torch.equal(dense[k], top8[k]) for k in dense)  # other soft targets
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_top_k_larger_than_the_vocabulary_or_without_a_bank_is_refused(text_runs):
    root, student = text_runs
    with pytest.raises(FitnetsError, match="teacher_topk=300 is more than the teacher's 257"):
        _distill(root, student, "big", ["perf.teacher_cache=memory", "perf.teacher_topk=300"])
    with pytest.raises(FitnetsError, match="perf.teacher_cache=off' builds none"):
        make_config(None, ["perf.teacher_cache=off", "perf.teacher_topk=8"])
