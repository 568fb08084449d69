"""Text corpora larger than memory (data.mode=stream): the training blocks stay in the
memory-mapped token file and each batch reads its own rows; the batches are memory mode's,
in the same order for the same seed, and a run killed mid-epoch resumes bit-exact."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import fitnets_cli
from fitnets.checkpoint import Checkpoints, load_weights
from fitnets.cli import main
from fitnets.config import make_config
from fitnets.data import text as text_module
from fitnets.data.prepare import prepare
from fitnets.data.text import StreamedTextData, TokenBlocks, unigram_perplexity
from fitnets.run import run

prepare_module = importlib.import_module("fitnets.data.prepare")  # fitnets.data.prepare: a function


def corpus(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i in range(12):
        (folder / f"{i}.txt").write_text(f"document {i}: " + "abcdefgh"[i % 8] * (60 + 9 * i))
    return folder


def data_args(tmp_path: Path, *more: str) -> list[str]:
    return ["data.name=text", f"data.path={corpus(tmp_path / 'c')}", f"data.root={tmp_path}",
            "data.block_size=16", "data.batch_size=8", *more]


def prepared(args: list[str]):
    return prepare(make_config(None, args).data, torch.device("cpu"))


def test_the_training_split_is_never_materialised_whole(tmp_path, monkeypatch):
    args = data_args(tmp_path, "data.mode=stream", "data.train_limit=20")
    # cutting a whole split into int64 blocks is what memory mode does: here, never
    def whole(*_a, **_k):
        raise AssertionError("a whole split was cut into int64 blocks")

    monkeypatch.setattr(prepare_module, "blocks", whole)
    monkeypatch.setattr(text_module, "blocks", whole)
    p = prepared(args)
    data = p.data
    assert isinstance(data, StreamedTextData) and isinstance(data.train, TokenBlocks)
    assert isinstance(data.train.tokens, np.memmap)  # the token file, mapped, not a tensor
    assert not hasattr(data.train, "x") and data.train_inputs() is None
    assert len(data.train) == 20 and data.unit == ("token", 16)
    assert "stream mode (data.mode)" in p.how and "read a batch at a time" in p.how
    batches = list(data.train_batches(torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [8, 8, 4]
    assert all(b.x.dtype == torch.long and b.x.shape[1] == 16 for b in batches)
    assert sum(len(b) for b in data.eval_batches(data.test)) == len(data.test)


def test_stream_batches_are_memory_batches_in_the_same_order(tmp_path):
    memory = prepared(data_args(tmp_path, "data.mode=memory")).data
    stream = prepared([*data_args(tmp_path / "s"), "data.mode=stream"]).data
    assert len(stream.train) == len(memory.train) and stream.unigram_ppl == memory.unigram_ppl
    for epoch in (1, 2):
        g1, g2 = torch.Generator().manual_seed(epoch), torch.Generator().manual_seed(epoch)
        for a, b in zip(memory.train_batches(g1), stream.train_batches(g2), strict=True):
            assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.idx, b.idx)
        assert torch.equal(g1.get_state(), g2.get_state())  # the generators agree after it
    # a resumed epoch: the same generator state, batches from the third on
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    tail = list(memory.train_batches(g1))[2:]
    for a, b in zip(tail, stream.train_batches(g2, start=2), strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.idx, b.idx)
    for split in ("val", "test"):
        a = torch.cat([b.y for b in memory.eval_batches(getattr(memory, split), (1, 7))])
        b = torch.cat([b.y for b in stream.eval_batches(getattr(stream, split), (1, 7))])
        assert torch.equal(a, b)
    assert torch.equal(memory.probe(3), stream.probe(3))


def test_auto_streams_what_would_not_fit(tmp_path):
    p = prepared(data_args(tmp_path, "data.memory_limit_gb=0.000001"))
    assert isinstance(p.data, StreamedTextData) and "stream mode (limit" in p.how
    p = prepared(data_args(tmp_path / "m"))
    assert not isinstance(p.data, StreamedTextData) and "memory mode (limit" in p.how


def test_unigram_perplexity_is_counted_a_chunk_at_a_time(monkeypatch):
    tokens = np.random.default_rng(0).integers(0, 7, 1000).astype(np.uint16)
    whole = unigram_perplexity(tokens, 7)
    monkeypatch.setattr(text_module, "COUNT_CHUNK", 64)
    assert unigram_perplexity(tokens, 7) == pytest.approx(whole, rel=1e-12)


def test_memory_and_stream_runs_train_the_same_network(tmp_path):
    base = ["device=cpu", "model.name=gpt", "model.width=16", "model.depth=1",
            "model.heads=2", "train.epochs=1", "train.optim.name=adam",
            "perf.precision=fp32"]
    runs = {}
    for mode in ("memory", "stream"):
        out = tmp_path / mode
        runs[mode] = run(make_config(None, [*base, *data_args(tmp_path / f"d{mode}"),
                                            f"data.mode={mode}"]), "train", out,
                         verbose=False)
    a, b = (load_weights(tmp_path / m / "model.pt")["state_dict"] for m in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs["memory"]["test_ppl"] == runs["stream"]["test_ppl"]


@pytest.mark.slow  # three fitnets processes
def test_a_streamed_run_killed_mid_epoch_resumes_bit_exact(tmp_path):
    args = ["train", "device=cpu", *data_args(tmp_path), "data.mode=stream",
            "model.name=gpt", "model.width=16", "model.depth=2", "model.heads=2",
            "train.epochs=2", "train.optim.name=adam", "train.optim.lr=0.01",
            "checkpoint_steps=2", "perf.precision=fp32"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    code = main([*args, f"out={ref}", "--quiet"])  # in this process, as the resume
    assert code in (0, 3)
    # epoch 1, after the step-2 save: a real process, with this one's thread count
    killed = fitnets_cli([*args, f"out={cut}"], kill_at="step:3")
    assert killed.returncode == -9, killed.stderr
    assert not (cut / "summary.json").exists()
    # what --resume continues from: inside epoch 1, after its second step
    latest = Checkpoints(cut).load_latest()
    assert latest["loop"]["epoch"] == 0 and latest["loop"]["partial"]["step"] == 2
    assert main(["train", "--resume", str(cut), "--quiet"]) == code

    def records(d):
        rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k not in ("time", "throughput")}
                for row in rows]

    assert records(cut) == records(ref)
    a, b = load_weights(ref / "model.pt"), load_weights(cut / "model.pt")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
