"""Text corpora (data.name=text): split by document, one token file reused until a file
changes, blocks whose targets are the inputs shifted by one."""

from __future__ import annotations

import ast
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fitnets import FitnetsError
from fitnets.config import make_config
from fitnets.data import text as text_module
from fitnets.data.prepare import prepare
from fitnets.data.text import (
    ByteTokenizer,
    Text,
    blocks,
    documents,
    split_documents,
    unigram_perplexity,
)


def write_corpus(folder, n: int = 30, words: int = 40):
    """``n`` documents, each a distinct marker repeated: doc_007 holds only 'd007' words."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"doc_{i:03d}.txt").write_text(" ".join([f"d{i:03d}"] * words) + "\n")
    return folder


def source(path, root, **kw) -> Text:
    return Text("text", root, path=str(path), **kw)


def decoded(src: Text, split: str) -> str:
    return ByteTokenizer().decode(src.tokens().splits[split])


def test_split_is_by_document_seeded_and_stable():
    parts = split_documents(100, seed=3)
    joined = np.concatenate(list(parts.values()))
    assert sorted(joined.tolist()) == list(range(100))  # each document in exactly one split
    assert (len(parts["test"]), len(parts["val"]), len(parts["train"])) == (10, 10, 80)
    again = split_documents(100, seed=3)
    assert all((parts[s] == again[s]).all() for s in parts)
    other = split_documents(100, seed=4)
    assert any((parts[s] != other[s]).any() for s in parts)
    assert len(split_documents(100, val=25)["val"]) == 25


def test_no_document_is_cut_between_splits(tmp_path):
    src = source(write_corpus(tmp_path / "c"), tmp_path / "root")
    text = {s: decoded(src, s) for s in ("train", "val", "test")}
    for i in range(30):
        marker = f"d{i:03d}"
        where = [s for s in text if marker in text[s]]
        assert len(where) == 1, (marker, where)
        assert text[where[0]].count(marker) == 40  # the whole document, in its split
    # the same split on a second source over the same files
    again = source(tmp_path / "c", tmp_path / "root2")
    assert decoded(again, "test") == text["test"]


def test_token_file_is_reused_then_rebuilt_when_a_file_changes(tmp_path):
    corpus = write_corpus(tmp_path / "c")
    root = tmp_path / "root"
    first = source(corpus, root).tokens()
    assert first.built and first.path.is_file() and first.path.parent == root / ".fitnets-cache"
    assert first.splits["train"].dtype == np.uint16 and isinstance(first.splits["train"],
                                                                    np.memmap)
    second = source(corpus, root).tokens()
    assert not second.built and second.path == first.path
    assert (second.splits["train"] == first.splits["train"]).all()
    doc = corpus / "doc_005.txt"
    doc.write_text("changed " * 50)
    os.utime(doc, ns=(doc.stat().st_atime_ns, doc.stat().st_mtime_ns + 10**9))
    third = source(corpus, root).tokens()
    assert third.built and third.path != first.path
    assert "changed" in "".join(ByteTokenizer().decode(third.splits[s]) for s in third.splits)


def test_a_half_written_token_file_is_rebuilt(tmp_path):
    corpus = write_corpus(tmp_path / "c")
    first = source(corpus, tmp_path / "root").tokens()
    test, path = np.array(first.splits["test"]), first.path  # copied: the map is cut below
    del first
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    again = source(corpus, tmp_path / "root").tokens()
    assert again.built and (again.splits["test"] == test).all()


def test_blocks_overlap_by_one_and_targets_are_the_next_tokens():
    tokens = np.arange(23, dtype=np.uint16)
    b = blocks(tokens, 5)
    assert b.shape == (4, 6) and b.dtype == np.int64
    assert b[0].tolist() == [0, 1, 2, 3, 4, 5] and b[1].tolist() == [5, 6, 7, 8, 9, 10]
    x, y = b[:, :-1], b[:, 1:]
    assert (y == x + 1).all()  # every target is the token after its input
    assert blocks(tokens[:5], 5).shape == (0, 6)


def test_documents_from_a_zip_jsonl_and_one_text_file(tmp_path):
    z = tmp_path / "c.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a/one.py", "x = 1\n")
        zf.writestr("a/two.md", "# two\n")
        zf.writestr("a/skip.bin", "nope")
        zf.writestr("__MACOSX/a/._one.py", "junk")
    docs, files = documents(z)
    assert [d.name for d in docs] == ["a/one.py", "a/two.md"] and files == [z]
    assert docs[0].read() == "x = 1\n"
    j = tmp_path / "c.jsonl"
    j.write_text("\n".join(json.dumps({"text": f"doc {i}", "id": i}) for i in range(4)) + "\n")
    docs, _ = documents(j)
    assert [d.read() for d in docs] == [f"doc {i}" for i in range(4)]
    t = tmp_path / "book.txt"
    t.write_text("first paragraph\nstill first\n\nsecond\n\n\nthird\n")
    docs, _ = documents(t)
    assert [d.read().strip() for d in docs] == ["first paragraph\nstill first", "second",
                                                "third"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": 1}\n')
    with pytest.raises(FitnetsError, match="line 1.*'text'"):
        documents(bad)


def test_prepare_gives_id_batches_shifted_by_one(tmp_path):
    corpus = write_corpus(tmp_path / "c")
    cfg = make_config(None, ["data.name=text", f"data.path={corpus}",
                             f"data.root={tmp_path / 'root'}", "data.block_size=16",
                             "data.batch_size=4"])
    p = prepare(cfg.data, torch.device("cpu"))
    assert p.input_shape == (16,) and p.num_classes == 257 and p.input_dtype == torch.long
    assert "unigram perplexity" in p.how and "built" in p.how
    batch = next(p.data.train_batches(torch.Generator().manual_seed(0)))
    assert batch.x.shape == batch.y.shape == (4, 16) and batch.x.dtype == torch.long
    rows = p.data.train
    assert torch.equal(rows.x[:, 1:], rows.y[:, :-1])
    assert torch.equal(rows.x[1:, 0], rows.y[:-1, -1])  # a block starts where the last ended
    # a corpus of one marker repeated: the unigram perplexity is that of its few bytes
    assert 1 < p.data.unigram_ppl < 10


def test_unigram_perplexity_by_hand():
    # frequencies 1/2, 1/4, 1/4: entropy 1.5 bits, perplexity 2 ** 1.5
    assert unigram_perplexity(np.array([0, 0, 1, 2]), 5) == pytest.approx(2 ** 1.5)


def test_text_needs_a_path_and_enough_documents(tmp_path):
    with pytest.raises(FitnetsError, match="data.path"):
        Text("text", tmp_path, path=None)
    corpus = write_corpus(tmp_path / "c", n=2)
    with pytest.raises(FitnetsError, match="at least 3"):
        source(corpus, tmp_path / "root").tokens()
    with pytest.raises(FitnetsError, match="does not exist"):
        source(tmp_path / "missing", tmp_path / "root").tokens()


@pytest.mark.integration  # transformers and tokenizers
def test_a_local_hugging_face_tokenizer(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    words = [f"d{i:03d}" for i in range(30)]
    vocab = {"[UNK]": 0, "</s>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    model = tokenizers.models.WordLevel(vocab, unk_token="[UNK]")
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                                eos_token="</s>")
    fast.save_pretrained(tmp_path / "tok")
    src = source(write_corpus(tmp_path / "c"), tmp_path / "root", tokenizer=str(tmp_path / "tok"))
    t = src.tokens()
    assert t.vocab_size == 32 and t.eod == 1
    ids = np.concatenate(list(t.splits.values()))
    assert (ids == 1).sum() == 30 and (ids == 0).sum() == 0  # one end per document, no unknowns
    with pytest.raises(FitnetsError, match="neither 'byte' nor a folder"):
        source(tmp_path / "c", tmp_path / "root", tokenizer="gpt2").tokens()


def test_the_text_source_never_imports_the_modules_that_import_it():
    # load -> text and prepare -> text: text importing either (even inside a function, to
    # dodge the cycle) would make the dependency two-way again
    tree = ast.parse(Path(text_module.__file__).read_text())
    imported = {f"{n.module}.{a.name}" if n.module == "fitnets.data" else n.module
                for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "fitnets.data.cache" in imported  # the walk sees text.py's imports
    assert not imported & {"fitnets.data.prepare", "fitnets.data.load"}
