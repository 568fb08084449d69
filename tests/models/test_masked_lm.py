"""Masked language models on text (issue 33): the built-in BERT is a bidirectional GPT; a
BERT teacher guides a thinner, deeper BERT student by hints then KD and the student's
masked-token perplexity ends below the unigram one; a causal/masked mix is refused; a
masked run killed mid-epoch resumes bit-exact; generate refuses a masked LM."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import fitnets_cli
from fitnets import FitnetsError
from fitnets.checkpoint import load_weights
from fitnets.cli import main
from fitnets.config import make_config
from fitnets.generation import generate
from fitnets.models import build_model
from fitnets.run import run


def corpus(folder):
    """Documents of one letter each: a masked letter is told by the block around it (a
    bidirectional model learns it in a few steps), not by the split's unigram counts."""
    folder.mkdir(parents=True)
    for i in range(24):  # each letter in 4 documents: the training split has them all
        (folder / f"{i}.txt").write_text(f"document {i}: " + "abcdef"[i % 6] * (40 + 5 * i))
    return folder


def args(tmp_path) -> list[str]:
    return ["device=cpu", "data.name=text", f"data.path={corpus(tmp_path / 'c')}",
            f"data.root={tmp_path}", "data.block_size=16", "data.batch_size=16",
            "perf.precision=fp32", "train.optim.name=adam", "train.optim.lr=0.01",
            "hints.stage.optim.name=adam", "hints.stage.optim.lr=0.01"]


def test_bert_is_a_bidirectional_gpt():
    net = build_model("bert", num_classes=258, sizes={"width": 16, "depth": 2, "heads": 2,
                                                      "context": 8}).eval()
    assert net.objective == "masked" and not net.blocks[0].attn.causal
    ids = torch.randint(0, 258, (2, 8), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 258
    with torch.no_grad():
        a, b = net(ids), net(changed)
    assert a.shape == (2, 8, 258)
    assert not torch.allclose(a[:, 0], b[:, 0])  # the first position sees the last


@pytest.mark.slow
def test_a_bert_teacher_guides_a_thinner_deeper_bert_by_hints_then_kd(tmp_path):
    common = args(tmp_path)
    teacher = tmp_path / "teacher"
    t = run(make_config(None, [*common, "model.name=bert", "model.width=32", "model.depth=2",
                               "model.heads=2", "train.epochs=5"]), "train", teacher,
            verbose=False)
    assert t["objective"] == "masked"
    out = tmp_path / "student"
    s = run(make_config(None, [
        *common, "method=fitnet", "teacher.name=bert", "teacher.width=32", "teacher.depth=2",
        "teacher.heads=2", f"teacher.weights={teacher}", "student.name=bert",
        "student.width=16", "student.depth=4", "student.heads=2", "hints.stage.epochs=1",
        "train.epochs=6"]), "distill", out, verbose=False)
    hints, kd = s["stages"]
    assert (hints["name"], kd["name"]) == ("hints:0", "kd")
    assert hints["guided"] == "blocks.1" and hints["hint"] == "blocks.0"
    assert s["objective"] == "masked" and s["params"] < t["params"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"train_soft", "val_ppl", "test_ppl"} <= set(rows[-1])
    # masked-token perplexity below the unigram one (the stall guard's chance), the
    # teacher's well below it
    assert t["test_ppl"] < 0.7 * t["unigram_ppl"], t
    assert s["test_ppl"] < s["unigram_ppl"], s
    assert load_weights(out / "model.pt")["num_classes"] == 258  # the byte ids and [MASK]
    with pytest.raises(FitnetsError, match="masked language model.*does not continue"):
        generate(out, "abc", tokens=3)


def test_a_causal_and_a_masked_model_are_refused_together(tmp_path):
    common = args(tmp_path)
    with pytest.raises(FitnetsError, match="teacher 'gpt' is a causal.*student 'bert' is a "
                                           "masked|student 'bert' is a masked.*teacher 'gpt'"):
        run(make_config(None, [*common, "method=kd", "teacher.name=gpt",
                               f"teacher.weights={tmp_path}", "student.name=bert"]),
            "distill", tmp_path / "mix", verbose=False)
    assert not (tmp_path / "mix").exists()


@pytest.mark.slow
def test_a_masked_run_killed_mid_epoch_resumes_bit_exact(tmp_path):
    common = [a for a in args(tmp_path) if not a.startswith("hints.")]
    run_args = ["train", *common, "model.name=bert", "model.width=16", "model.depth=2",
                "model.heads=2", "train.epochs=2", "data.batch_size=8", "checkpoint_steps=2"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    code = main([*run_args, f"out={ref}", "--quiet"])  # in this process, as the resume
    assert code in (0, 3)
    # epoch 1, after the step-2 save: a real process, with this one's thread count
    killed = fitnets_cli([*run_args, f"out={cut}"], kill_at="step:3")
    assert killed.returncode == -9, killed.stderr
    assert main(["train", "--resume", str(cut), "--quiet"]) == code

    def records(d):
        rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k != "time"} for row in rows]

    assert records(cut) == records(ref)
    a, b = load_weights(ref / "model.pt"), load_weights(cut / "model.pt")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
