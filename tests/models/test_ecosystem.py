"""Models from the ecosystems by name: timm:, torchvision:, hf: (Hugging Face)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from fitnets.cli import main
from fitnets.errors import FitnetsError
from fitnets.models import build_model
from fitnets.models.ecosystem import parse

HAS_HF = importlib.util.find_spec("transformers") is not None


def test_specs_are_parsed_with_their_keyword_arguments():
    assert parse("timm:resnet18") == ("timm", "resnet18", {})
    assert parse("timm:vit_tiny_patch16_224?img_size=32&drop_rate=0.1&global_pool=avg") == (
        "timm", "vit_tiny_patch16_224", {"img_size": 32, "drop_rate": 0.1, "global_pool": "avg"})
    assert parse("hf:/models/my vit") == ("hf", "/models/my vit", {})
    with pytest.raises(FitnetsError, match=r"\?key=value"):
        parse("timm:resnet18?oops")
    with pytest.raises(FitnetsError, match="names no model"):
        parse("torchvision:")


@pytest.mark.parametrize("spec,module", [("timm:resnet18", "timm"),
                                         ("torchvision:resnet18", "torchvision")])
def test_a_missing_library_names_its_extra(spec, module, monkeypatch):
    import sys

    for name in [m for m in sys.modules if m.split(".")[0] == module] + [module]:
        monkeypatch.setitem(sys.modules, name, None)  # None: "import halted", as if absent
    with pytest.raises(FitnetsError,
                       match=rf"need the {module}.* pip install 'fitnets\[{module}\]'"):
        build_model(spec)


def _vits(root):
    from transformers import ViTConfig, ViTForImageClassification

    for name, layers, width in (("teacher", 2, 48), ("student", 4, 16)):
        config = ViTConfig(image_size=32, patch_size=8, hidden_size=width,
                           num_hidden_layers=layers, num_attention_heads=2,
                           intermediate_size=2 * width, num_labels=3)
        ViTForImageClassification(config).save_pretrained(root / name)


def _images(root):
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 6)):
        for c, col in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200)]):
            d = root / split / f"c{c}"
            d.mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 60, (32, 32, 3)) + np.array(col) * 0.8
                Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(d / f"{i}.png")
    return root


@pytest.mark.skipif(not HAS_HF, reason="needs transformers (pip install 'fitnets[hf]')")
def test_a_hugging_face_teacher_and_student_from_local_folders_distill_through_the_cli(
        tmp_path, capsys):
    """Folders written by save_pretrained (config.json + model.safetensors); the hint pair
    taps the attention blocks' tuple outputs by index."""
    _vits(tmp_path)
    imgs = _images(tmp_path / "imgs")
    base = ["device=cpu", "data.name=folder", f"data.path={imgs}", f"data.root={tmp_path}",
            "data.val_size=15", "data.batch_size=16", "data.preprocess=standardize",
            "train.optim.name=adam", "train.optim.lr=0.001", "--quiet"]
    assert main(["layers", f"hf:{tmp_path / 'teacher'}", "--input-shape", "3,32,32"]) == 0
    listing = capsys.readouterr().out
    assert "model.vit.layers.0.attention[0]" in listing and "17x48" in listing
    from conftest import ran_to_end  # a tiny run may end at chance: exit 3

    assert ran_to_end(main(["train", *base, "--model", f"hf:{tmp_path / 'teacher'}",
                            "train.epochs=2", f"out={tmp_path / 't'}"]), tmp_path / "t")
    pairs = ('hints.pairs=[["model.vit.layers.1.attention[0]", '
             '"model.vit.layers.0.attention[0]"]]')
    assert main(["distill", *base, "--teacher", f"hf:{tmp_path / 'teacher'}",
                 f"teacher.weights={tmp_path / 't'}", "--student", f"hf:{tmp_path / 'student'}",
                 pairs, "hints.stage.epochs=1", "hints.stage.optim.name=adam", "train.epochs=1",
                 f"out={tmp_path / 's'}"]) == 0
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    hint = summary["stages"][0]
    assert hint["guided_shape"] == [17, 16] and hint["hint_shape"] == [17, 48]
    # token layers (CLS + 4x4 patches): one linear 16 -> 48 shared by every token
    assert hint["regressor"] == "token" and hint["regressor_params"] == 16 * 48 + 48
    assert hint["mapping"] == "keep 1 prefix token(s); linear 16 -> 48 per token"
    assert summary["epochs"] == {"hints:0": 1, "kd": 1} and summary["test_acc"] > 0.5
    # without teacher.weights an hf: teacher is its folder's own weights (save_pretrained)
    assert ran_to_end(main(["distill", *base, "--teacher", f"hf:{tmp_path / 'teacher'}",
                            "--student", f"hf:{tmp_path / 'student'}", "--method", "kd",
                            "train.epochs=1", f"out={tmp_path / 'k'}"]), tmp_path / "k")


@pytest.mark.skipif(not HAS_HF, reason="needs transformers (pip install 'fitnets[hf]')")
def test_pretrained_weights_from_an_unreachable_hub_say_how_to_use_files(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FitnetsError, match=r"cannot build model 'hf:nobody/no-such-vit'.*"
                                           r"teacher.weights=FILE_OR_FOLDER"):
        build_model("hf:nobody/no-such-vit", num_classes=3, pretrained=True)


HAS_TIMM = all(importlib.util.find_spec(m) for m in ("timm", "torchvision"))
needs_timm = pytest.mark.skipif(
    not HAS_TIMM, reason="needs timm and torchvision (pip install 'fitnets[timm]'); .ci/run "
                         "runs this file in a second environment that has them")


def _cli(tmp_path, *args):
    """Run a command on the tiny image folder; a train/distill run that ran to its end (exit
    0, or 3: these 1-epoch runs may end at chance, see conftest.ran_to_end) gives 0."""
    from conftest import ran_to_end

    imgs = tmp_path / "imgs" if (tmp_path / "imgs").exists() else _images(tmp_path / "imgs")
    base = ["device=cpu", "data.name=folder", f"data.path={imgs}", f"data.root={tmp_path}",
            "data.val_size=15", "data.batch_size=16", "data.preprocess=standardize",
            "train.optim.name=adam", "train.optim.lr=0.001", "hints.stage.optim.name=adam",
            "hints.stage.epochs=1", "--quiet"]
    code = main([args[0], *base, *args[1:]])
    out = next((a[4:] for a in args if str(a).startswith("out=")), None)
    return 0 if out is not None and ran_to_end(code, out) else code


@needs_timm
def test_a_timm_teacher_from_a_safetensors_file_distills_a_timm_student(tmp_path):
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)  # a "pretrained" teacher, as a user downloads one: a file
    teacher = timm.create_model("resnet18", num_classes=3)
    save_file(teacher.state_dict(), str(tmp_path / "resnet18.safetensors"))
    assert _cli(tmp_path, "distill", "--teacher", "timm:resnet18",
                f"teacher.weights={tmp_path / 'resnet18.safetensors'}",
                "--student", "timm:resnet10t?drop_rate=0.1", "hints.pairs=[[layer2, layer2]]",
                "train.epochs=1", f"out={tmp_path / 's'}") == 0
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["model"] == "timm:resnet10t?drop_rate=0.1"
    assert [s["name"] for s in summary["stages"]] == ["hints:0", "kd"]
    assert summary["stages"][0]["hint_shape"] == [128, 4, 4]


@needs_timm
def test_a_torchvision_teacher_distills_a_built_in_student(tmp_path):
    assert _cli(tmp_path, "train", "--model", "torchvision:resnet18", "train.epochs=1",
                f"out={tmp_path / 't'}") == 0
    assert _cli(tmp_path, "distill", "--teacher", "torchvision:resnet18",
                f"teacher.weights={tmp_path / 't'}", "--student", "resnet20",
                "hints.pairs=[[layer2, layer2]]", "train.epochs=1", f"out={tmp_path / 's'}") == 0
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    hint = summary["stages"][0]
    assert hint["guided_shape"] == [32, 16, 16] and hint["hint_shape"] == [128, 4, 4]
    assert hint["regressor"] in ("strided", "conv")


@needs_timm
def test_timm_layers_are_listed_and_pretrained_offline_says_to_use_files(capsys, monkeypatch):
    assert main(["layers", "timm:resnet18", "--input-shape", "3,224,224"]) == 0
    out = capsys.readouterr().out
    assert "layer4" in out and "512x7x7" in out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FitnetsError, match="pretrained=false and teacher.weights"):
        build_model("timm:resnet18", num_classes=3, pretrained=True)


@needs_timm
def test_a_timm_vit_teacher_guides_a_built_in_vit_student_through_token_hints(tmp_path):
    """timm's ViT says its prefix tokens (num_prefix_tokens); a patch-8 teacher (CLS + 4x4)
    guides a patch-4 student (CLS + 8x8): CLS kept, the student's grid shrunk to 4x4."""
    import timm
    import torch
    from safetensors.torch import save_file

    spec = "timm:vit_tiny_patch16_224?img_size=32&patch_size=8&depth=2&embed_dim=48&num_heads=2"
    torch.manual_seed(0)
    teacher = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2,
                                embed_dim=48, num_heads=2, num_classes=3)
    assert teacher.num_prefix_tokens == 1
    save_file(teacher.state_dict(), str(tmp_path / "vit.safetensors"))
    assert _cli(tmp_path, "distill", "--teacher", spec,
                f"teacher.weights={tmp_path / 'vit.safetensors'}", "--student",
                "vit_student_small", 'hints.pairs=[["blocks.3", "blocks.1"]]',
                "train.epochs=1", f"out={tmp_path / 's'}") == 0
    hint = json.loads((tmp_path / "s" / "summary.json").read_text())["stages"][0]
    assert hint["guided_shape"] == [65, 32] and hint["hint_shape"] == [17, 48]
    assert hint["regressor"] == "token" and hint["regressor_params"] == 32 * 48 + 48
    assert hint["mapping"] == ("keep 1 prefix token(s); resize the grid 8x8 -> 4x4 (bilinear, "
                               "antialiased when shrinking); linear 32 -> 48 per token")
