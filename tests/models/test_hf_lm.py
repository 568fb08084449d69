"""Hugging Face causal LMs on text (issue 33): ``hf:DIR`` of a GPT2LMHeadModel or
LlamaForCausalLM folder is a language model like models/gpt.py's (ids in, (B, T, vocab)
logits out, the raw model's logits exactly), its blocks listed as hint layers under their
Hugging Face names; an hf teacher guides a built-in GPT student and a GPT teacher an hf
student, through hints and KD; vocabularies and tokenizers that do not match are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fitnets import FitnetsError
from fitnets.cli import main
from fitnets.config import make_config
from fitnets.distill.suggest import candidate_layers
from fitnets.models import build_model, load_run_model
from fitnets.models.ecosystem import HFCausalLM
from fitnets.run import run

# integration: transformers (.ci/run's locked run checks these under its pins)
pytestmark = pytest.mark.integration

transformers = pytest.importorskip("transformers")

VOCAB = 257  # data.tokenizer=byte's


def gpt2(vocab: int = VOCAB, width: int = 32, depth: int = 2, positions: int = 128):
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=vocab, n_embd=width, n_layer=depth, n_head=2, n_positions=positions,
        bos_token_id=0, eos_token_id=0))


def llama(vocab: int = VOCAB, width: int = 16, depth: int = 4):
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=width, intermediate_size=2 * width,
        num_hidden_layers=depth, num_attention_heads=2, num_key_value_heads=2,
        max_position_embeddings=128, bos_token_id=0, eos_token_id=0))


def config_only(model, folder: Path) -> None:
    """The folder of a student to train from scratch: its config, naming its architecture
    (as save_pretrained writes it), and no weights."""
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(folder)


def corpus(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i in range(12):
        (folder / f"{i}.txt").write_text(f"document {i}: " + "the cat sat on the mat. "
                                         * (6 + i))
    return folder


def records(d: Path) -> list[dict]:
    return [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Folders: a GPT-2 with weights, a GPT-2 and a Llama of a config only (students, or a
    teacher trained here); a byte-level text corpus; the GPT-2 trained on it (a run)."""
    root = tmp_path_factory.mktemp("hflm")
    torch.manual_seed(0)
    gpt2().save_pretrained(root / "gpt2")
    config_only(gpt2(), root / "gpt2-config")
    config_only(llama(), root / "llama-config")
    args = ["device=cpu", "data.name=text", f"data.path={corpus(root / 'c')}",
            f"data.root={root}", "data.block_size=16", "data.batch_size=16",
            "perf.precision=fp32", "perf.teacher_cache=off", "train.optim.name=adam",
            "train.optim.lr=0.01", "hints.stage.optim.name=adam",
            "hints.stage.optim.lr=0.01"]
    teacher = root / "teacher"
    run(make_config(None, [*args, f"model.name=hf:{root / 'gpt2-config'}",
                           "train.epochs=2"]), "train", teacher, verbose=False)
    return root, args, teacher


def test_the_wrapper_gives_the_raw_models_logits_under_its_names(setup):
    root, _, _ = setup
    net = build_model(f"hf:{root / 'gpt2'}")  # the folder's config says: a causal LM
    raw = transformers.AutoModelForCausalLM.from_pretrained(root / "gpt2").eval()
    assert isinstance(net, HFCausalLM) and net.weights
    assert net.num_classes == VOCAB and net.input_shape == (128,)
    assert net.input_dtype == torch.long and net.num_prefix_tokens == 0
    assert net.default_hint == net.default_guided == "transformer.h.0"
    assert net.state_dict().keys() == raw.state_dict().keys()
    ids = torch.randint(0, VOCAB, (3, 16), generator=torch.Generator().manual_seed(0))
    net.eval()
    with torch.no_grad():
        out = net(ids)
        assert out.shape == (3, 16, VOCAB)
        assert torch.equal(out, raw(input_ids=ids).logits)
    # train()/eval() reach the Hugging Face root too (it is not a child of the wrapper)
    assert net.train()._hf.training and not net.eval()._hf.training
    with pytest.raises(FitnetsError, match="takes token ids"):
        net(torch.zeros(1, 4))
    net.save_pretrained(root / "saved")  # the whole model's folder, not its first child's
    again = transformers.AutoModelForCausalLM.from_pretrained(root / "saved").eval()
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids).logits, out)
    layers = [n for n, _ in candidate_layers(net, (16,))]
    assert {"transformer.h.0", "transformer.h.1"} <= set(layers)
    student = build_model(f"hf:{root / 'llama-config'}", task="lm", sizes={"context": 16})
    assert not student.weights and student.input_shape == (16,)
    assert student.block_names == [f"model.layers.{i}" for i in range(4)]
    assert student.default_guided == "model.layers.1"


def test_layers_and_pairs_between_hf_and_gpt_from_the_command_line(setup, capsys):
    root, _, _ = setup
    assert main(["layers", f"hf:{root / 'gpt2'}"]) == 0
    out = capsys.readouterr().out
    assert "transformer.h.1" in out and "GPT2Block" in out and "128x32" in out
    assert main(["layers", "--teacher", f"hf:{root / 'gpt2'}", "--student", "gpt"]) == 0
    out = capsys.readouterr().out
    assert "*  blocks.1" in out and "transformer.h.0" in out and "token" in out
    assert main(["layers", "--teacher", "gpt", "--student",
                 f"hf:{root / 'llama-config'}", "--input-shape", "16"]) == 0
    out = capsys.readouterr().out
    assert "*  model.layers.1" in out and "blocks.1" in out


def test_an_hf_teacher_guides_a_gpt_student_through_hints_then_kd(setup, tmp_path):
    root, args, teacher = setup
    out = tmp_path / "student"
    summary = run(make_config(None, [
        *args, "method=fitnet", f"teacher.name=hf:{root / 'gpt2-config'}",
        f"teacher.weights={teacher}", "student.name=gpt", "student.width=16",
        "student.depth=4", "student.heads=2", "hints.stage.epochs=2", "train.epochs=2"]),
        "distill", out, verbose=False)
    hints, kd = summary["stages"]
    assert (hints["name"], kd["name"]) == ("hints:0", "kd")
    # the models' defaults: the GPT's blocks.1 guided by GPT-2's transformer.h.0
    assert hints["guided"] == "blocks.1" and hints["hint"] == "transformer.h.0"
    assert hints["regressor"] == "token" and hints["hint_shape"] == [16, 32]
    rows = records(out)
    hint_rows = [r for r in rows if r["stage"] == "hints"]
    assert hint_rows[-1]["val_hint_loss"] < hint_rows[0]["val_hint_loss"]
    assert {"train_soft", "val_ppl"} <= set(rows[-1])
    assert summary["test_ppl"] < summary["unigram_ppl"]


def test_a_gpt_teacher_guides_an_hf_student_rebuilt_from_its_run(setup, tmp_path):
    root, args, _ = setup
    gpt_teacher = tmp_path / "gpt-teacher"
    run(make_config(None, [*args, "model.name=gpt", "model.width=32", "model.depth=2",
                           "model.heads=2", "train.epochs=1"]), "train", gpt_teacher,
        verbose=False)
    out = tmp_path / "student"
    summary = run(make_config(None, [
        *args, "method=fitnet", "teacher.name=gpt", "teacher.width=32", "teacher.depth=2",
        "teacher.heads=2", f"teacher.weights={gpt_teacher}",
        f"student.name=hf:{root / 'llama-config'}", "hints.stage.epochs=1",
        "train.epochs=1"]), "distill", out, verbose=False)
    hints, kd = summary["stages"]
    assert hints["guided"] == "model.layers.1" and hints["hint"] == "blocks.0"
    assert hints["guided_shape"] == [16, 16] and hints["hint_shape"] == [16, 32]
    assert summary["model"] == f"hf:{root / 'llama-config'}"
    # model.pt rebuilds the student (a config-only folder: its weights are the run's)
    net, bundle = load_run_model(out)
    assert bundle["sizes"] == {"context": 16} and isinstance(net, HFCausalLM)
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))
    want = build_model(f"hf:{root / 'llama-config'}", task="lm", sizes={"context": 16})
    want.load_state_dict(torch.load(out / "model.pt", weights_only=True)["state_dict"])
    with torch.no_grad():
        assert torch.equal(net(ids), want.eval()(ids))


def _tokenizer(folder: Path, words: list[str]) -> Path:
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, "</s>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                         eos_token="</s>").save_pretrained(folder)
    return folder


def test_other_vocabularies_and_tokenizers_are_refused_naming_both(setup, tmp_path):
    root, args, _ = setup
    distill = [*args, "method=kd", "student.name=gpt", "student.width=16", "student.depth=2",
               "student.heads=2"]

    def refused(overrides: list[str]) -> str:
        with pytest.raises(FitnetsError) as e:
            run(make_config(None, overrides), "distill", tmp_path / "run", verbose=False)
        assert not (tmp_path / "run").exists()
        return str(e.value)

    gpt2(vocab=300).save_pretrained(tmp_path / "wide")
    message = refused([*distill, f"teacher.name=hf:{tmp_path / 'wide'}"])
    for words in ("teacher hf model", "300 ids", "data.tokenizer='byte'", "257 ids",
                  "vocab_size=257"):
        assert words in message, message
    # a teacher saved with its tokenizer; the data tokenised by another of the same size
    words = "the cat sat on mat document".split()
    teacher = tmp_path / "with-tokenizer"
    gpt2(vocab=len(words) + 2).save_pretrained(teacher)
    _tokenizer(teacher, words)
    other = _tokenizer(tmp_path / "other-tok", list(reversed(words)))
    message = refused([*distill, f"teacher.name=hf:{teacher}", f"data.tokenizer={other}"])
    for words_ in (f"its own tokenizer ({teacher}, 8 ids)", f"data.tokenizer='{other}'",
                   f"Set data.tokenizer={teacher}"):
        assert words_ in message, message
    # a copy of the teacher's tokenizer in another folder is the same vocabulary: accepted
    copy = _tokenizer(tmp_path / "copy-tok", words)
    out = tmp_path / "ok"
    run(make_config(None, [*distill, f"teacher.name=hf:{teacher}", f"data.tokenizer={copy}",
                           "train.epochs=1"]), "distill", out, verbose=False)
    assert (out / "summary.json").is_file()
    # a teacher folder of a config only has nothing to teach
    message = refused([*distill, f"teacher.name=hf:{root / 'gpt2-config'}"])
    assert "without weights" in message and "teacher.weights=RUN_DIR" in message
    # more tokens than the model has positions
    gpt2(positions=8).save_pretrained(tmp_path / "short")
    message = refused([*distill, f"teacher.name=hf:{tmp_path / 'short'}"])
    assert "8 positions" in message and "data.block_size=16" in message
    # a masked LM does not teach a next-token predictor (the objective follows the models)
    transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32)).save_pretrained(tmp_path / "bert")
    message = refused([*distill, f"teacher.name=hf:{tmp_path / 'bert'}"])
    assert "is a causal language model" in message
    assert "bert' is a masked language model" in message
