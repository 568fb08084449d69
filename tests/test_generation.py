"""fitnets generate and fitnets.generate: text from a language-model run. Greedy decoding is
deterministic and equals a hand-written argmax loop on the same model; a seeded draw repeats;
the context is cropped to the block size; a run that is not a language model, a missing run
and an empty prompt are refused with what generate needs."""

from __future__ import annotations

import shutil

import pytest
import torch

import fitnets
from fitnets.checkpoint import load_weights, save_weights
from fitnets.cli import main
from fitnets.config import make_config
from fitnets.data.text import ByteTokenizer
from fitnets.errors import FitnetsError
from fitnets.generation import generate, load_language_model
from fitnets.models import build_model
from fitnets.run import run

BLOCK = 16


def write_corpus(folder):
    """A few KB of text: 12 documents (train, validation and test need some each)."""
    folder.mkdir(parents=True)
    words = "the quick brown fox jumps over the lazy dog and runs away".split()
    for i in range(12):
        text = " ".join(words[(i + j) % len(words)] for j in range(40 + 5 * i))
        (folder / f"{i}.txt").write_text(f"doc {i}: {text}.\n")
    return folder


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A real `fitnets train` of a width-16, depth-2 GPT on the tiny corpus (about 3 s)."""
    tmp = tmp_path_factory.mktemp("lm")
    corpus = write_corpus(tmp / "corpus")
    out = tmp / "run"
    cfg = make_config(None, ["device=cpu", "data.name=text", f"data.path={corpus}",
                             f"data.root={tmp}", f"data.block_size={BLOCK}",
                             "data.batch_size=8", "model.name=gpt", "model.width=16",
                             "model.depth=2", "model.heads=2", "train.epochs=2",
                             "train.optim.name=adam", "train.optim.lr=0.01",
                             "perf.precision=fp32", f"out={out}"])
    run(cfg, "train", out, verbose=False)
    return out


def argmax_loop(model, ids: list[int], n: int, context: int) -> list[int]:
    """Greedy decoding written out by hand: the argmax of the last position, appended."""
    seq = list(ids)
    with torch.no_grad():
        for _ in range(n):
            x = torch.tensor([seq[-context:]])
            seq.append(int(model(x)[0, -1].argmax()))
    return seq[len(ids):]


def test_greedy_is_deterministic_and_equals_an_argmax_loop(lm_run):
    lm = load_language_model(lm_run)
    assert lm.context == BLOCK and isinstance(lm.tokenizer, ByteTokenizer)
    prompt = "the quick brown fox jumps"  # 25 bytes: longer than the block, so cropped
    a = generate(lm_run, prompt, tokens=30, temperature=0)
    b = generate(lm, prompt, tokens=30, temperature=0, seed=123)  # the seed plays no part
    assert a.ids == b.ids and len(a.ids) == 30
    assert a.ids == argmax_loop(lm.model, list(prompt.encode()), 30, BLOCK)
    assert a.text == prompt + a.continuation
    assert a.continuation == ByteTokenizer().decode(a.ids)


def test_a_seeded_draw_repeats_and_another_seed_differs(lm_run):
    lm = load_language_model(lm_run)
    draws = [generate(lm, "over the", tokens=24, temperature=1.5, seed=s).ids
             for s in (7, 7, 8)]
    assert draws[0] == draws[1]
    assert draws[0] != draws[2]
    # top-k 1 is greedy, whatever the temperature
    top1 = generate(lm, "over the", tokens=12, temperature=2.0, top_k=1, seed=3).ids
    assert top1 == generate(lm, "over the", tokens=12, temperature=0).ids


def test_top_k_draws_only_among_the_k_most_likely(lm_run):
    lm = load_language_model(lm_run)
    prompt = list(b"the lazy")
    with torch.no_grad():
        top = set(torch.topk(lm.model(torch.tensor([prompt]))[0, -1], 3).indices.tolist())
    firsts = {generate(lm, "the lazy", tokens=1, temperature=5.0, top_k=3, seed=s).ids[0]
              for s in range(30)}
    assert firsts <= top and len(firsts) > 1


def test_the_command_prints_prompt_and_continuation(lm_run, capsys):
    assert main(["generate", str(lm_run), "the lazy", "--tokens", "12",
                 "--temperature", "0"]) == 0
    printed = capsys.readouterr().out
    expected = generate(lm_run, "the lazy", tokens=12, temperature=0).text
    assert printed == expected + "\n"
    assert fitnets.generate is generate  # the Python entry point


def test_errors_name_what_is_wrong(lm_run, tmp_path, capsys):
    with pytest.raises(FitnetsError, match="prompt is empty"):
        generate(lm_run, "")
    with pytest.raises(FitnetsError, match="does not exist.*data.name=text"):
        generate(tmp_path / "nowhere", "x")
    with pytest.raises(FitnetsError, match="temperature must be >= 0"):
        generate(lm_run, "x", temperature=-1)
    with pytest.raises(FitnetsError, match="top_k must be >= 1"):
        generate(lm_run, "x", top_k=0)
    assert main(["generate", str(tmp_path / "nowhere"), "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
    # an unfinished run: config.yaml but no model.pt
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(lm_run / "config.yaml", unfinished / "config.yaml")
    with pytest.raises(FitnetsError, match="has not finished.*--resume"):
        generate(unfinished, "x")


def test_an_image_run_is_refused_naming_what_it_is(tmp_path):
    model = build_model("mnist_student", num_classes=10)
    image_run = tmp_path / "image"
    image_run.mkdir()
    save_weights({"model": "mnist_student", "num_classes": 10, "input_shape": [1, 28, 28],
                  "state_dict": model.state_dict()}, image_run / "model.pt")
    (image_run / "config.yaml").write_text("data: {name: mnist}\n")
    with pytest.raises(FitnetsError, match=r"mnist_student trained on mnist \(an image "
                                           r"classifier: 10 classes, input 1x28x28\).*"
                                           r"needs a language-model run"):
        generate(image_run, "hello")


def test_a_run_whose_tokenizer_folder_is_gone_says_so(lm_run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(lm_run, moved, ignore=shutil.ignore_patterns("checkpoints"))
    bundle = load_weights(moved / "model.pt")
    bundle["tokenizer"] = str(tmp_path / "gone-tokenizer")
    save_weights(bundle, moved / "model.pt")
    with pytest.raises(FitnetsError, match="gone-tokenizer.*no longer there"):
        generate(moved, "the")
