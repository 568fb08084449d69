"""Hugging Face masked LMs (``hf:DIR`` of a BertForMaskedLM folder) on text: wrapped as
the built-in BERT (ids in, (B, T, vocab) logits out, its layers under their names), a
teacher of a built-in BERT student by hints then KD."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fitnets.config import make_config
from fitnets.models import build_model
from fitnets.models.ecosystem import HFMaskedLM
from fitnets.run import run

# integration: transformers (.ci/run's locked run checks these under its pins)
pytestmark = pytest.mark.integration

transformers = pytest.importorskip("transformers")

VOCAB = 258  # data.tokenizer=byte's 257 ids and its mask id, 257


def tiny_bert(depth: int = 2):
    return transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=depth, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, pad_token_id=0))


def corpus(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i in range(12):
        (folder / f"{i}.txt").write_text(f"document {i}: " + "abcdef"[i % 6] * (40 + 5 * i))
    return folder


def test_an_hf_bert_teaches_a_built_in_bert_by_hints_then_kd(tmp_path):
    torch.manual_seed(0)
    tiny_bert().save_pretrained(tmp_path / "bert")
    net = build_model(f"hf:{tmp_path / 'bert'}", task="lm", sizes={"context": 16}).eval()
    assert isinstance(net, HFMaskedLM) and net.objective == "masked" and net.weights
    assert net.block_names == ["bert.encoder.layer.0", "bert.encoder.layer.1"]
    raw = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "bert").eval()
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(net(ids), raw(input_ids=ids).logits)
    out = tmp_path / "student"
    summary = run(make_config(None, [
        "device=cpu", "data.name=text", f"data.path={corpus(tmp_path / 'c')}",
        f"data.root={tmp_path}", "data.block_size=16", "data.batch_size=16",
        "perf.precision=fp32", "method=fitnet", f"teacher.name=hf:{tmp_path / 'bert'}",
        "student.name=bert", "student.width=16", "student.depth=4", "student.heads=2",
        "hints.stage.epochs=1", "train.epochs=1"]), "distill", out, verbose=False)
    hints, kd = summary["stages"]
    assert hints["hint"] == "bert.encoder.layer.0" and hints["guided"] == "blocks.1"
    assert summary["objective"] == "masked" and summary["teacher"].startswith("hf:")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"train_soft", "val_ppl"} <= set(rows[-1])
