"""`fitnets distill` on a language model: hints from a teacher GPT block to a thinner,
deeper student's through a per-token regressor, then KD on the next-token distribution; a
teacher of another vocabulary is refused with both named and the way out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fitnets import FitnetsError
from fitnets.checkpoint import save_weights
from fitnets.config import make_config
from fitnets.distill.losses import kd_loss
from fitnets.distill.stages import per_position
from fitnets.run import run


def corpus(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i in range(12):
        text = f"document {i}: " + "the cat sat on the mat. " * (20 + 2 * i)
        (folder / f"{i}.txt").write_text(text)
    return folder


def base(tmp_path: Path) -> list[str]:
    return ["device=cpu", "data.name=text", f"data.path={corpus(tmp_path / 'c')}",
            f"data.root={tmp_path}", "data.block_size=16", "data.batch_size=16",
            "perf.precision=fp32", "perf.teacher_cache=off", "train.optim.name=adam",
            "train.optim.lr=0.01", "hints.stage.optim.name=adam", "hints.stage.optim.lr=0.01"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lm")
    args = base(tmp)
    out = tmp / "teacher"
    run(make_config(None, [*args, "model.name=gpt", "model.width=32", "model.depth=2",
                           "model.heads=2", "train.epochs=2"]), "train", out, verbose=False)
    return args, out


def test_hints_then_kd_train_a_thinner_deeper_student(teacher, tmp_path):
    args, weights = teacher
    out = tmp_path / "student"
    summary = run(make_config(None, [
        *args, "method=fitnet", "teacher.name=gpt", "teacher.width=32", "teacher.depth=2",
        "teacher.heads=2", f"teacher.weights={weights}", "student.name=gpt",
        "student.width=16", "student.depth=4", "student.heads=2",
        "hints.pairs=[[blocks.1, blocks.0]]", "hints.stage.epochs=2", "train.epochs=2",
        "kd.lambda_start=1", "kd.lambda_saturate=3"]), "distill", out, verbose=False)
    assert [s["name"] for s in summary["stages"]] == ["hints:0", "kd"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    hints = [r for r in rows if r["stage"] == "hints"]
    assert hints[-1]["val_hint_loss"] < hints[0]["val_hint_loss"]
    kd = [r for r in rows if r["stage"] == "kd"]
    assert [r["lambda"] for r in kd] == [pytest.approx(4 * 2 / 3), pytest.approx(4 / 3)]
    assert {"train_soft", "train_ce", "val_ppl", "test_ppl"} <= set(kd[-1])
    assert summary["test_ppl"] < summary["unigram_ppl"]


def test_a_teacher_of_another_vocabulary_is_refused(tmp_path):
    fake = tmp_path / "other" / "model.pt"
    fake.parent.mkdir()
    save_weights({"model": "gpt", "num_classes": 1000, "tokenizer": "/models/tok",
                  "input_shape": [16], "state_dict": {}}, fake)
    cfg = make_config(None, [*base(tmp_path), "method=kd", "teacher.name=gpt",
                             f"teacher.weights={fake.parent}", "student.name=gpt"])
    with pytest.raises(FitnetsError) as e:
        run(cfg, "distill", tmp_path / "run", verbose=False)
    message = str(e.value)
    for words in ("'/models/tok'", "1,000 ids", "'byte'", "257 ids",
                  "data.tokenizer=/models/tok", "data.tokenizer=byte"):
        assert words in message, message


def test_kd_on_every_position_is_kd_on_the_flattened_positions():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    y = torch.randint(0, 7, (2, 5), generator=g)
    (ls, ys), (lt, _) = per_position(s, y), per_position(t, y)
    total, hard, soft = kd_loss(ls, lt, ys, lam=2.0, tau=3.0)
    p_t = torch.softmax(t / 3, -1)
    assert soft == pytest.approx(-(p_t * torch.log_softmax(s / 3, -1)).sum(-1).mean().item())
    assert hard == pytest.approx(torch.nn.functional.cross_entropy(s.transpose(1, 2), y).item())


def test_a_language_model_run_exports_and_reloads_with_its_logits(teacher, tmp_path):
    # once refused; tests/test_export_lm.py checks the LM export's formats and tokenizers
    from fitnets.export import export_run, load_exported
    from fitnets.models import load_run_model

    _, run_dir = teacher
    info = export_run(run_dir, tmp_path / "export", formats=("safetensors",))
    assert info["task"] == "causal-lm" and info["tokenizer"]["kind"] == "byte"
    ids = torch.tensor([list(b"the cat sat")])
    with torch.no_grad():
        assert torch.equal(load_exported(tmp_path / "export")[0](ids),
                           load_run_model(run_dir)[0](ids))


def test_joint_hints_and_cross_entropy_in_one_stage_on_every_position(teacher, tmp_path):
    """method=joint (CE + beta * hint in one stage) once crashed on (B, T, V) logits: its
    cross-entropy now counts every position, as KD's and back-propagation's do."""
    args, weights = teacher
    out = tmp_path / "joint"
    summary = run(make_config(None, [
        *args, "method=joint", "teacher.name=gpt", "teacher.width=32", "teacher.depth=2",
        "teacher.heads=2", f"teacher.weights={weights}", "student.name=gpt",
        "student.width=16", "student.depth=4", "student.heads=2", "data.train_limit=32",
        "hints.pairs=[[blocks.1, blocks.0]]", "train.epochs=1"]), "distill", out,
        verbose=False)
    (row,) = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"train_ce", "train_hint", "val_ppl"} <= set(row)
    assert row["train_loss"] == pytest.approx(row["train_ce"] + row["beta"] * row["train_hint"],
                                              rel=1e-4)
    assert summary["test_ppl"] > 0
