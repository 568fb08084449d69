"""fitnets export of a language-model run: every format traced on token ids with dynamic
batch and sequence axes and checked (ONNX through onnxruntime); the export reloads with the
run's logits and its tokenizer from its own folder (a Hugging Face tokenizer is copied), so
fitnets generate gives the same text from the export as from the run; an hf: student's
save_pretrained folder loads in transformers alone."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
import torch

from conftest import train_tiny_lm
from fitnets.checkpoint import save_weights
from fitnets.cli import main
from fitnets.config import make_config
from fitnets.data.text import ByteTokenizer, HFTokenizer
from fitnets.errors import FitnetsError
from fitnets.export import export_run, load_exported, load_exported_tokenizer
from fitnets.generation import generate
from fitnets.models import build_model, load_run_model
from fitnets.run import run

# integration: onnx, onnxruntime, onnxscript, safetensors, transformers (.ci/run's locked run)
pytestmark = pytest.mark.integration

HAS_ORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))
SIZES = {"width": 16, "depth": 2, "heads": 2, "context": 16}


def fake_lm_run(path, tokenizer="byte", vocab=257, seed=0):
    """A run directory as `fitnets train` leaves it for a GPT on text (random weights)."""
    torch.manual_seed(seed)
    model = build_model("gpt", num_classes=vocab, sizes=SIZES)
    path.mkdir(parents=True)
    save_weights({"model": "gpt", "batchnorm": False, "num_classes": vocab,
                  "input_shape": [SIZES["context"]], "state_dict": model.state_dict(),
                  "preprocess": {"kind": "none"}, "sizes": dict(SIZES),
                  "tokenizer": tokenizer}, path / "model.pt")
    return path, model.eval()


def hf_tokenizer(folder):
    """A word-level Hugging Face tokenizer saved to ``folder`` (no download): 32 ids."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    words = [f"w{i:02d}" for i in range(30)]
    vocab = {"[UNK]": 0, "</s>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                                eos_token="</s>")
    fast.save_pretrained(folder)
    return folder


@pytest.mark.skipif(not HAS_ORT, reason="needs onnx and onnxruntime (pip install 'fitnets[onnx]')")
def test_every_format_matches_the_run_on_token_ids_of_another_length(tmp_path):
    run_dir, model = fake_lm_run(tmp_path / "run")
    info = export_run(run_dir)
    out = run_dir / "export"
    assert info["task"] == "causal-lm" and info["context"] == 16 and info["vocab_size"] == 257
    assert info["tokenizer"] == {"kind": "byte", "vocab_size": 257, "eod": 256}
    for kind in ("safetensors", "torch_export", "torchscript", "onnx"):
        assert info["files"][kind]["max_abs_diff"] <= 1e-4, (kind, info["files"][kind])
    assert not (out / "preprocess.pt").exists()  # token ids: nothing to apply first
    config = json.loads((out / "config.json").read_text())
    assert config["sizes"] == SIZES and config["architecture"] == "gpt"
    assert config["tokenizer"]["kind"] == "byte" and config["context"] == 16

    # the ONNX file by hand: int64 ids, batch and sequence both other than the trace's
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "student.onnx"),
                                   providers=["CPUExecutionProvider"])
    for shape in ((1, 5), (4, 16)):
        ids = torch.randint(257, shape, generator=torch.Generator().manual_seed(1))
        (logits,) = session.run(None, {"input_ids": ids.numpy()})
        with torch.no_grad():
            expected = model(ids)
        assert logits.shape == (*shape, 257)
        assert torch.allclose(torch.from_numpy(logits), expected, atol=1e-4)
    program = torch.export.load(str(out / "student.pt2")).module()
    ids = torch.randint(257, (2, 7))
    with torch.no_grad():
        assert torch.allclose(program(ids), model(ids), atol=1e-5)


def test_the_export_reloads_without_the_run_and_generates_the_same_text(tmp_path, capsys):
    run_dir, _ = fake_lm_run(tmp_path / "run")
    out = tmp_path / "exported"
    assert main(["export", str(run_dir), "--out", str(out), "--formats", "safetensors"]) == 0
    printed = capsys.readouterr().out
    assert "a language model: context 16 tokens, vocabulary 257, tokenizer byte" in printed
    ids = torch.randint(257, (3, 11), generator=torch.Generator().manual_seed(2))
    run_model, _ = load_run_model(run_dir)
    with torch.no_grad():
        expected = run_model(ids)
    text_from_run = generate(run_dir, "def main(", tokens=12, temperature=0).text
    sampled_from_run = generate(run_dir, "import ", tokens=12, temperature=0.9, top_k=20,
                                seed=4).ids
    shutil.rmtree(run_dir)  # the export stands alone
    model, pre = load_exported(out)
    assert pre is None
    with torch.no_grad():
        assert torch.equal(model(ids), expected)  # the same weights, tied ones included
    assert model.head.weight is model.tok_emb.weight
    assert isinstance(load_exported_tokenizer(out), ByteTokenizer)
    assert generate(out, "def main(", tokens=12, temperature=0).text == text_from_run
    assert generate(out, "import ", tokens=12, temperature=0.9, top_k=20,
                    seed=4).ids == sampled_from_run


def test_a_hugging_face_tokenizer_is_copied_into_the_export(tmp_path):
    tok_dir = hf_tokenizer(tmp_path / "tok")
    vocab = HFTokenizer(str(tok_dir)).vocab_size
    run_dir, _ = fake_lm_run(tmp_path / "run", tokenizer=str(tok_dir.resolve()), vocab=vocab)
    prompt = "w01 w02 w03"
    from_run = generate(run_dir, prompt, tokens=6, temperature=0)
    info = export_run(run_dir, formats=("safetensors",))
    assert info["tokenizer"]["kind"] == "hf" and info["tokenizer"]["eod"] == 1
    assert (run_dir / "export" / "tokenizer" / "tokenizer.json").is_file()
    shutil.rmtree(tok_dir)  # the run's own tokenizer folder is gone ...
    with pytest.raises(FitnetsError, match="no longer there"):
        generate(run_dir, prompt)
    tok = load_exported_tokenizer(run_dir / "export")  # ... the export's copy is read
    assert tok.encode(prompt) == from_run.prompt_ids
    assert generate(run_dir / "export", prompt, tokens=6, temperature=0).ids == from_run.ids
    with pytest.raises(FitnetsError, match="no longer there.*export again"):
        export_run(run_dir, out_dir=tmp_path / "again")


def test_an_image_export_has_no_tokenizer_and_generate_says_so(tmp_path):
    model = build_model("mnist_student", num_classes=10)
    run_dir = tmp_path / "image"
    run_dir.mkdir()
    save_weights({"model": "mnist_student", "num_classes": 10, "input_shape": [1, 28, 28],
                  "state_dict": model.state_dict(), "preprocess": {"kind": "scale"}},
                 run_dir / "model.pt")
    export_run(run_dir, formats=("safetensors",))
    with pytest.raises(FitnetsError, match="export of an image classifier.*no tokenizer"):
        generate(run_dir / "export", "hello")


def test_a_real_run_exports_and_reloads_with_its_logits(tmp_path):
    out = train_tiny_lm(tmp_path, tmp_path / "run", epochs=1)
    info = export_run(out, formats=("safetensors", "state_dict"))
    assert info["files"]["safetensors"]["max_abs_diff"] == 0.0
    ids = torch.tensor([list(b"lorem ipsum")])
    model, _ = load_exported(out / "export")
    with torch.no_grad():
        assert torch.equal(model(ids), load_run_model(out)[0](ids))


# --------------------------------------------------------------------------- hf: students


def test_an_hf_causal_lm_run_exports_a_save_pretrained_folder_transformers_loads(tmp_path):
    transformers = pytest.importorskip("transformers")
    tok_dir = hf_tokenizer(tmp_path / "tok")
    tok = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(tok), n_positions=16, n_embd=16,
                                     n_layer=2, n_head=2, bos_token_id=1, eos_token_id=1)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "hfgpt")
    tok.save_pretrained(tmp_path / "hfgpt")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(12):
        (corpus / f"{i}.txt").write_text(" ".join(f"w{(i * j) % 10:02d}" for j in range(60)))
    out = tmp_path / "run"
    run(make_config(None, ["device=cpu", "data.name=text", f"data.path={corpus}",
                           f"data.root={tmp_path}", f"data.tokenizer={tok_dir}",
                           "data.block_size=16", "data.batch_size=8",
                           f"model.name=hf:{tmp_path / 'hfgpt'}", "train.epochs=1",
                           "train.optim.name=adam", "train.optim.lr=0.01", f"out={out}"]),
        "train", out, verbose=False)
    ids = torch.tensor([tok.encode("w01 w02 w05 w03")])
    student, _ = load_run_model(out)
    with torch.no_grad():
        expected = student(ids)
    from_run = generate(out, "w01 w02", tokens=5, temperature=0).ids
    info = export_run(out, formats=("safetensors",))
    assert info["files"]["hf"]["class"] == "GPT2LMHeadModel"
    assert info["files"]["safetensors"]["max_abs_diff"] == 0.0
    shutil.rmtree(tmp_path / "hfgpt")  # neither the model's folder ...
    shutil.rmtree(tok_dir)  # ... nor the tokenizer's is needed any more
    hf = out / "export" / "hf"
    alone = transformers.AutoModelForCausalLM.from_pretrained(str(hf)).eval()
    assert transformers.AutoTokenizer.from_pretrained(str(hf)).encode("w01 w02") == [3, 4]
    model, _ = load_exported(out / "export")  # built from the export's own hf/ folder
    with torch.no_grad():
        assert torch.allclose(alone(input_ids=ids).logits, expected, atol=1e-6)
        assert torch.allclose(model(ids), expected, atol=1e-6)
    assert generate(out / "export", "w01 w02", tokens=5, temperature=0).ids == from_run
