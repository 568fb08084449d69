"""Transformer students and teachers end to end (issue 17): a ViT teacher -> ViT student
FitNet through the command line (stage 1 on token hints, stage 2 KD), several hint pairs in
turn, a CNN teacher -> ViT student (tokens -> map), the joint method on tokens, and a killed
transformer run resumed bit-exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import fitnets_cli, photos
from fitnets.checkpoint import load_weights
from fitnets.cli import main
from fitnets.models import build_model

# 3 classes x 20 photos, 12 for validation: 48 training images, batches of 16 -> 3 steps/epoch
FAST = ["device=cpu", "data.name=folder", "data.image_size=32", "data.batch_size=16",
        "data.val_size=12", "data.preprocess=standardize", "train.optim.name=adam",
        "train.optim.lr=0.003", "hints.stage.optim.name=adam", "hints.stage.optim.lr=0.003",
        "--quiet"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("vit")
    p = photos(root / "photos")
    data = [f"data.path={p}", f"data.root={root}"]
    teacher = root / "teacher"
    assert main(["train", *FAST, *data, "model.name=vit_teacher_small", "train.epochs=2",
                 f"out={teacher}"]) == 0
    return root, data, teacher


def distill_args(data: list[str], teacher: Path) -> list[str]:
    return ["distill", *FAST, *data, "student.name=vit_student_small",
            "teacher.name=vit_teacher_small", f"teacher.weights={teacher}", "method=fitnet",
            "hints.stage.epochs=2", "train.epochs=2"]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_vit_teacher_to_thin_deep_vit_student_through_the_cli(setup, tmp_path, capsys):
    root, data, teacher = setup
    out = tmp_path / "s"
    assert main([*distill_args(data, teacher), f"out={out}"]) == 0
    s = summary(out)
    hints, kd = s["stages"]
    assert (hints["name"], kd["name"]) == ("hints:0", "kd")
    assert (hints["guided"], hints["hint"]) == ("blocks.3", "blocks.1")  # middle blocks
    assert hints["guided_shape"] == [65, 32] and hints["hint_shape"] == [65, 96]
    assert hints["regressor"] == "token" and hints["regressor_params"] == 32 * 96 + 96
    assert hints["regressor_mults"] == 65 * 32 * 96
    assert hints["mapping"] == "keep 1 prefix token(s); linear 32 -> 96 per token"
    assert hints["reduction"] == "mean"  # a projection's, as auto says
    assert s["epochs"] == {"hints:0": 2, "kd": 2} and 0 <= s["test_error"] <= 1
    # stage 1 trained the student's blocks up to its guided block only (and the embedding)
    student = build_model("vit_student_small", num_classes=3)
    below = sum(p.numel() for n, p in student.named_parameters()
                if n.startswith(("patch_embed", "cls_token", "pos_embed"))
                or any(n.startswith(f"blocks.{i}.") for i in range(4)))
    assert hints["trained_params"] == below


def test_the_pair_is_printed_with_its_mapping_and_cost(setup, tmp_path, capsys):
    root, data, teacher = setup
    args = [a for a in distill_args(data, teacher) if a != "--quiet"]
    assert main([*args, "hints.stage.epochs=1", "train.epochs=1", "hints.cls_token=drop",
                 f"out={tmp_path / 'p'}"]) == 0
    out = capsys.readouterr().out
    assert ("[hints/0] guided blocks.3 [65, 32] -> hint blocks.1 [65, 96]: token regressor "
            "(drop the student's 1 prefix token(s); drop the teacher's 1 prefix token(s) from "
            "the hint; linear 32 -> 96 per token), none, 3,168 parameters, 196,608 "
            "multiplications per image") in out


def test_several_token_pairs_are_trained_in_turn(setup, tmp_path):
    root, data, teacher = setup
    pairs = '[["blocks.1", "blocks.0"], ["blocks.3", "blocks.1"], ["blocks.5", "blocks.2"]]'
    out = tmp_path / "k"
    assert main([*distill_args(data, teacher), f"hints.pairs={pairs}", "hints.stage.epochs=1",
                 "train.epochs=1", f"out={out}"]) == 0
    s = summary(out)
    assert [st["name"] for st in s["stages"]] == ["hints:0", "hints:1", "hints:2", "kd"]
    assert [st["guided"] for st in s["stages"][:3]] == ["blocks.1", "blocks.3", "blocks.5"]
    trained = [st["trained_params"] for st in s["stages"][:3]]
    assert trained[0] < trained[1] < trained[2]  # each stage reaches deeper into the student


def test_a_cnn_teacher_guides_a_vit_student_through_a_token_to_map_regressor(setup, tmp_path):
    root, data, _ = setup
    cnn = tmp_path / "resnet"
    assert main(["train", *FAST, *data, "model.name=resnet20", "train.epochs=1",
                 f"out={cnn}"]) == 0
    out = tmp_path / "s"
    assert main(["distill", *FAST, *data, "student.name=vit_student_small",
                 "teacher.name=resnet20", f"teacher.weights={cnn}", "method=fitnet",
                 "hints.stage.epochs=1", "train.epochs=1", "hints.nonlinearity=relu",
                 f"out={out}"]) == 0
    hints = summary(out)["stages"][0]
    assert hints["hint_shape"] == [32, 16, 16] and hints["regressor"] == "token"
    assert hints["nonlinearity"] == "relu"  # as asked: ResNet's blocks end in a ReLU
    assert "reshape the patch tokens into a map; resize the grid 8x8 -> 16x16" in \
        hints["mapping"]


def test_joint_method_on_token_pairs(setup, tmp_path):
    root, data, teacher = setup
    out = tmp_path / "j"
    args = [a for a in distill_args(data, teacher) if a != "method=fitnet"]
    assert main([*args, "method=joint", "hints.cls_token=drop", f"out={out}"]) == 0
    s = summary(out)
    assert s["stages"][0]["name"] == "joint"
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(m["train_hint"] > 0 for m in metrics if "train_hint" in m)


def _records(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k != "time"}
            for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_killed_transformer_run_resumes_bit_exact(setup, tmp_path):
    root, data, teacher = setup
    args = [*distill_args(data, teacher), "data.augment_flip=true", "data.augment_pad=2"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert main([*args, f"out={ref}", "--quiet"]) == 0  # in this process; the killed ones
    # are real processes with its thread count. Killed inside stage 1 (step 5: epoch 2 of the
    # hints), then inside KD (its step 4)
    killed = fitnets_cli([*args, f"out={cut}"], kill_at="step:5", quiet=False)
    assert killed.returncode == -9, killed.stderr
    killed = fitnets_cli(["distill", "--resume", str(cut)], kill_at="step:5", quiet=False)
    assert killed.returncode == -9, killed.stderr
    assert not (cut / "summary.json").exists()
    assert main(["distill", "--resume", str(cut), "--quiet"]) == 0
    want, got = (load_weights(d / "model.pt")["state_dict"] for d in (ref, cut))
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert _records(cut) == _records(ref)
    assert [(m["stage"], m["epoch"]) for m in _records(cut)] == [
        ("hints", 1), ("hints", 2), ("kd", 1), ("kd", 2)]
