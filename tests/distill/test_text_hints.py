"""Text transformers (issue 17): BERT-like students and teachers with token hints, from
Python datasets of token ids: the user's own modules and Hugging Face folders (``hf:DIR``,
built as sequence classifiers), the token regressor between hidden states, the layer
listing of a wrapped model, the errors, and a killed text run resumed bit-exact."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import fitnets
from fitnets.checkpoint import load_weights
from fitnets.cli import main
from fitnets.data.preprocess import Preprocess
from fitnets.distill.suggest import candidate_layers
from fitnets.errors import FitnetsError
from fitnets.models import build_model

# integration: transformers (.ci/run's locked run checks these under its pins)
pytestmark = pytest.mark.integration

transformers = pytest.importorskip("transformers")

T, VOCAB = 16, 64
FAST = ["device=cpu", "train.optim.name=adam", "train.optim.lr=0.003",
        "hints.stage.optim.name=adam", "hints.stage.optim.lr=0.003", "data.batch_size=32",
        "train.epochs=2", "hints.stage.epochs=2"]
PAIR = {"pairs": [["model.bert.encoder.layer.1", "model.bert.encoder.layer.0"]]}


def bert(width: int, depth: int) -> nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=width, num_hidden_layers=depth, num_attention_heads=2,
        intermediate_size=2 * width, max_position_embeddings=32, num_labels=2)
    return transformers.BertForSequenceClassification(config)


class Wrapped(nn.Module):
    """What a user writes around a Hugging Face text model: ids in, logits out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(input_ids=ids).logits


class Tokens(torch.utils.data.Dataset):
    """Sequences of T token ids; the label says whether id 5 occurs more often than id 7."""

    def __init__(self, n: int, seed: int, targets: bool = True):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, VOCAB, (n, T), generator=g)
        self.y = ((self.ids == 5).sum(1) > (self.ids == 7).sum(1)).long()
        if targets:
            self.targets = self.y

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return self.ids[i], self.y[i]


def records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A wide, shallow BERT teacher and a thin, deeper one, saved as Hugging Face folders."""
    root = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    for name, width, depth in (("teacher", 48, 2), ("student", 16, 4)):
        bert(width, depth).save_pretrained(root / name)
    return root


def test_token_ids_pass_preprocessing_unchanged_and_floats_become_float32():
    ids = torch.tensor([[3, 0, 63]])
    out = Preprocess("none")(ids)
    assert out.dtype == torch.int64 and torch.equal(out, ids)
    assert Preprocess("none")(torch.ones(2, dtype=torch.float64)).dtype == torch.float32


@pytest.mark.slow  # trainings: 10-45 s
def test_a_bert_teacher_guides_a_thin_deep_bert_student_from_python(tmp_path):
    torch.manual_seed(0)
    teacher, student = Wrapped(bert(48, 2)), Wrapped(bert(16, 4))
    train, test = Tokens(256, 0), Tokens(64, 1)
    fitnets.train(model=teacher, train=train, test=test, out=tmp_path / "t",
                  overrides=FAST, verbose=False)
    r = fitnets.distill(teacher=teacher, student=student, train=train, test=test,
                        out=tmp_path / "s", overrides=FAST, hints=PAIR, verbose=False)
    hints, kd = r.summary["stages"]
    assert (hints["name"], kd["name"]) == ("hints:0", "kd")
    assert hints["guided_shape"] == [T, 16] and hints["hint_shape"] == [T, 48]
    # one linear 16 -> 48 shared by the 16 positions (no prefix token: the counts are equal)
    assert hints["regressor"] == "token" and hints["regressor_params"] == 16 * 48 + 48
    assert hints["regressor_mults"] == T * 16 * 48
    assert hints["mapping"] == "linear 16 -> 48 per token"
    assert r.model is student and student.input_dtype == torch.int64  # traced with ids
    hint_losses = [m["train_loss"] for m in records(r.run_dir) if m["stage"] == "hints"]
    assert len(hint_losses) == 2 and hint_losses[1] < hint_losses[0]
    assert r.summary["params"] == sum(p.numel() for p in student.parameters())


def test_hf_text_folders_are_sequence_classifiers_that_mask_padding(folders):
    net = build_model(f"hf:{folders / 'student'}", num_classes=3)
    assert net.text and net.input_dtype == torch.long
    assert net.model.config.num_labels == 3
    net.eval()
    ids = torch.tensor([[4, 9, 5, 0, 0, 0]])  # 0: BERT's pad_token_id
    mask = torch.tensor([[1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        want = net.model(input_ids=ids, attention_mask=mask).logits
        unmasked = net.model(input_ids=ids).logits
        assert torch.allclose(net(ids), want)
        assert not torch.allclose(want, unmasked)  # the mask is what made the difference
    with pytest.raises(FitnetsError, match="takes token ids"):
        net(torch.zeros(1, 6))


@pytest.mark.slow  # trainings: 10-45 s
def test_hf_text_folders_distill_by_name_with_their_layers_listed(folders, tmp_path, capsys):
    r = fitnets.distill(teacher={"name": f"hf:{folders / 'teacher'}"},
                        student={"name": f"hf:{folders / 'student'}"},
                        train=Tokens(128, 0), test=Tokens(64, 1), out=tmp_path / "s",
                        overrides=FAST, hints=PAIR, verbose=False)
    assert r.summary["teacher"] == f"hf:{folders / 'teacher'}"
    assert r.summary["stages"][0]["regressor"] == "token"
    assert r.model.model.config.num_labels == 2  # from the dataset's targets
    # the wrapper has one child (model): the listing reaches its encoder's blocks
    layers = [n for n, _ in candidate_layers(r.model, (T,))]
    assert layers == [f"model.bert.encoder.layer.{i}" for i in range(4)]
    assert main(["layers", "--teacher", f"hf:{folders / 'teacher'}", "--student",
                 f"hf:{folders / 'student'}", "--input-shape", str(T)]) == 0
    out = capsys.readouterr().out
    assert "*  model.bert.encoder.layer.2  16x16" in out and "token" in out


def test_text_datasets_refuse_image_augmentation_and_unknown_class_counts(folders, tmp_path):
    student = Wrapped(bert(16, 2))
    with pytest.raises(FitnetsError, match=r"token ids of shape \(16,\).*augment_pad=0"):
        fitnets.train(model=student, train=Tokens(64, 0), test=Tokens(32, 1),
                      out=tmp_path / "a", overrides=[*FAST, "data.augment_pad=2"],
                      verbose=False)
    with pytest.raises(FitnetsError, match="do not say how many classes.*`classes` list"):
        fitnets.train(model={"name": f"hf:{folders / 'student'}"},
                      train=Tokens(64, 0, targets=False), test=Tokens(32, 1),
                      out=tmp_path / "b", overrides=FAST, verbose=False)


def test_an_hf_model_that_is_neither_image_nor_text_classifier_is_refused(tmp_path):
    transformers.Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32).save_pretrained(tmp_path / "w")
    with pytest.raises(FitnetsError, match="'wav2vec2' model.*neither as an image"):
        build_model(f"hf:{tmp_path / 'w'}", num_classes=2)


def distill_text(out: str, folders: str, resume: bool = False) -> None:
    """The run of the kill test below: in a process of its own (SCRIPT) or in pytest's."""
    data = dict(train=Tokens(128, 0), test=Tokens(64, 1))
    if resume:
        fitnets.distill(resume=out, verbose=False, **data)
    else:
        fitnets.distill(teacher={"name": f"hf:{folders}/teacher"},
                        student={"name": f"hf:{folders}/student"}, out=out,
                        overrides=FAST, hints=PAIR, verbose=False, **data)


SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_text_hints import distill_text
distill_text(sys.argv[1], sys.argv[2], resume=len(sys.argv) > 3)
"""


@pytest.mark.slow
def test_a_killed_text_run_resumes_bit_exact(folders, tmp_path):
    from conftest import fitnets_env, same_threads  # here: SCRIPT's process imports
    # this file without conftest on its path

    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(SCRIPT.format(tests=str(Path(__file__).parent))))

    def run(out: Path, *more: str, kill_at: str | None = None):
        return subprocess.run([sys.executable, str(script), str(out), str(folders), *more],
                              env=fitnets_env(kill_at, same_threads()), capture_output=True,
                              text=True, timeout=600)

    ref, cut = tmp_path / "ref", tmp_path / "cut"
    distill_text(str(ref), str(folders))  # in this process, as the resume
    # 4 steps an epoch: killed in the second hint epoch (at its step 2), in a real process
    # with this one's thread count; the resume redoes hint epoch 2 from its checkpoint, then
    # the KD stage. (A second kill, inside KD, went for CI time: each process here imports
    # transformers; test_reliability.py kills the same loop in both stages.)
    assert run(cut, kill_at="step:6").returncode == -9
    assert not (cut / "summary.json").exists()
    distill_text(str(cut), str(folders), resume=True)
    want, got = (load_weights(d / "model.pt")["state_dict"] for d in (ref, cut))
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    strip = [[{k: v for k, v in m.items() if k != "time"} for m in records(d)]
             for d in (ref, cut)]
    assert strip[0] == strip[1]
    assert [(m["stage"], m["epoch"]) for m in strip[1]] == [
        ("hints", 1), ("hints", 2), ("kd", 1), ("kd", 2)]
