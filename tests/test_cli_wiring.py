"""The command line end to end: profile, layers pairs, export, joint mode, and
distilling on any image-folder zip with the user's own nets."""

from __future__ import annotations

import io
import json
import textwrap
import typing
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fitnets.checkpoint import load_weights
from fitnets.cli import main
from fitnets.config import HintConfig, make_config
from fitnets.data.memory import Arrays, Batch, Data
from fitnets.distill.methods import Setup
from fitnets.distill.methods.joint import JointStage
from fitnets.distill.regressor import KINDS
from fitnets.distill.taps import run_to
from fitnets.distill.teacher import Teacher
from fitnets.errors import FitnetsError
from fitnets.models import build_model
from fitnets.perf import FP32
from fitnets.run import run
from fitnets.trainer import Trainer

FAST = ["device=cpu", "data.name=mnist", "data.download=false", "data.val_size=40",
        "data.batch_size=32", "train.optim.name=adam", "train.optim.lr=0.003"]


# --------------------------------------------------------------------------- config


def test_every_regressor_kind_and_joint_are_accepted():
    allowed = typing.get_args(typing.get_type_hints(HintConfig)["regressor"])
    assert set(allowed) == set(KINDS)
    for kind in KINDS:
        assert make_config(None, [f"hints.regressor={kind}"]).hints.regressor == kind
    cfg = make_config(None, ["method=joint", "hints.beta=50", "train.optim.weight_decay=5e-4"])
    assert (cfg.method, cfg.hints.beta) == ("joint", 50.0)
    assert cfg.train.optim.weight_decay == 5e-4  # YAML 1.1 reads 5e-4 as a string
    with pytest.raises(FitnetsError, match="must be a number"):
        make_config(None, ["train.optim.lr=fast"])


# --------------------------------------------------------------------------- profile


def test_profile_prints_table5_counts(capsys, tmp_path):
    md = tmp_path / "t5.md"
    code = main(["profile", "--teacher", "cifar_teacher", "--students", "fitnet1", "fitnet2",
                 "fitnet4", "--batch-size", "1", "--repeats", "1", "--warmup", "0",
                 "--markdown", str(md)])
    assert code == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert "30.08M" in rows["fitnet1"] and "181.8K" in rows["fitnet1"]
    assert "107.6M" in rows["fitnet2"]
    assert "381.9M" in rows["fitnet4"]
    assert rows["cifar_teacher"].rstrip().endswith("| 1.00 | 1.00 |")
    assert "30.08M" in md.read_text()


def test_profile_user_model_needs_an_input_shape(capsys, tmp_path):
    f = tmp_path / "nets.py"
    f.write_text(NETS)
    assert main(["profile", "--teacher", f"{f}:teacher", "--students", f"{f}:student"]) == 2
    assert "--input-shape" in capsys.readouterr().err
    assert main(["profile", "--teacher", f"{f}:teacher", "--students", f"{f}:student",
                 "--input-shape", "3,16,16", "--batch-size", "2", "--repeats", "1",
                 "--num-classes", "3"]) == 0


# --------------------------------------------------------------------------- layers


def test_layers_lists_pairs_with_the_default_marked(capsys):
    assert main(["layers", "--teacher", "resnet56", "--student", "resnet20",
                 "--regressor", "conv1x1"]) == 0
    out = capsys.readouterr().out
    marked = [line for line in out.splitlines() if line.startswith("*")]
    assert len(marked) == 1 and marked[0].split()[1] == "layer2" and "conv1x1" in marked[0]
    assert "impossible" in out  # e.g. conv1x1 between maps of different sizes
    assert main(["layers", "--teacher", "resnet56", "--regressor", "nope"]) == 2


# --------------------------------------------------------------------------- joint mode


def _tiny_data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    return Data(train=Arrays(x, y), val=Arrays(x[:16], y[:16]), test=Arrays(x[:16], y[:16]),
                batch_size=16, eval_batch_size=32)


def test_joint_loss_is_ce_plus_beta_times_hint_from_the_parts(tmp_path):
    torch.manual_seed(0)
    teacher, student = build_model("mnist_teacher").eval(), build_model("mnist_student")
    cfg = make_config(None, ["method=joint", "hints.beta=7", "train.epochs=1"])
    data = _tiny_data()
    setup = Setup(cfg, student, Teacher(teacher, cfg, FP32, data.train.x, 32), data, (1, 28, 28))
    stage = JointStage(setup, [("conv4", "conv2")])
    desc = stage.summary
    assert desc["reduction"] == "mean" and desc["pairs"][0]["regressor"] == "conv"
    regressor = stage.module.regressors[0]
    stage.module.eval()  # no dropout: the same forward twice
    x, y = data.train.x[:8], data.train.y[:8]
    stage.start_epoch(1)
    total, parts = stage.loss(Batch(x, y))
    with torch.no_grad():
        ce = F.cross_entropy(student(x), y)
        (v,) = run_to(student, x, ["conv4"])
        (u,) = run_to(teacher, x, ["conv2"])
        hint = (regressor(v) - u).pow(2).mean()
    assert torch.allclose(parts["ce"], ce) and torch.allclose(parts["hint"], hint)
    assert torch.allclose(total, ce + 7 * hint)

    before = [p.detach().clone() for p in regressor.parameters()]
    Trainer(tmp_path, data, student, verbose=False).fit(stage)
    after = list(regressor.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, after))  # trained with the student


@pytest.fixture(scope="module")
def mnist_teacher_run(tmp_path_factory):
    from conftest import write_tiny_mnist

    root = write_tiny_mnist(tmp_path_factory.mktemp("tmj") / "data")
    out = tmp_path_factory.mktemp("teacher") / "run"
    run(make_config(None, [*FAST, f"data.root={root}", "model.name=mnist_teacher",
                           "train.epochs=1"]), "train", out, verbose=False)
    return root, out


def test_joint_distill_end_to_end_and_model_pt_has_no_regressor(mnist_teacher_run, tmp_path,
                                                                capsys):
    from conftest import ran_to_end

    root, teacher = mnist_teacher_run
    out = tmp_path / "joint"
    assert ran_to_end(main(["distill", *FAST, f"data.root={root}", f"teacher.weights={teacher}",
                            "--method", "joint", "--teacher", "mnist_teacher", "--student",
                            "mnist_student", "train.epochs=1", "--out", str(out), "--quiet"]),
                      out)  # 1 tiny epoch may end at chance: exit 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "joint" and summary["epochs"] == {"joint": 1}
    assert summary["stages"][0]["pairs"][0]["guided"] == "conv4"
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["joint"]
    assert {"train_ce", "train_hint", "train_loss", "beta"} <= set(records[0])
    state = load_weights(out / "model.pt")["state_dict"]
    assert not any("regressor" in k for k in state)
    build_model("mnist_student").load_state_dict(state)  # strict: exactly the student


# --------------------------------------------------------------------------- export


def test_export_command_prints_files_and_differences(mnist_teacher_run, tmp_path, capsys):
    _, teacher = mnist_teacher_run
    out = tmp_path / "exp"
    assert main(["export", str(teacher), "--out", str(out), "--formats", "state_dict",
                 "torchscript"]) == 0
    text = capsys.readouterr().out
    assert "student.torchscript.pt" in text and "max abs difference" in text
    assert (out / "export.json").is_file()
    assert main(["export", str(tmp_path / "nothing")]) == 2


# --------------------------------------------------------------------------- image folder


NETS = textwrap.dedent('''
    from torch import nn

    def _net(widths, num_classes, in_channels):
        layers, c = {}, in_channels
        for i, w in enumerate(widths, 1):
            layers[f"conv{i}"] = nn.Sequential(nn.Conv2d(c, w, 3, padding=1), nn.ReLU(),
                                               nn.MaxPool2d(2) if i % 2 == 0 else nn.Identity())
            c = w
        layers["pool"] = nn.AdaptiveAvgPool2d(1)
        layers["flat"] = nn.Flatten()
        layers["classifier"] = nn.Linear(c, num_classes)
        return _Named(layers)

    class _Named(nn.Module):
        def __init__(self, layers):
            super().__init__()
            for k, m in layers.items():
                self.add_module(k, m)

        def forward(self, x):
            for m in self.children():
                x = m(x)
            return x

    def teacher(num_classes=10, in_channels=3):
        return _net([16, 16], num_classes, in_channels)

    def student(num_classes=10, in_channels=3):
        return _net([8, 8, 8, 8], num_classes, in_channels)
''')


def write_folder_zip(path, n_per_class=24, size=16, seed=0):
    """3 classes of RGB PNGs: a red, green or blue square at a random place, on noise."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as zf:
        for split, n in (("train", n_per_class), ("test", n_per_class // 3)):
            for c, name in enumerate(("red", "green", "blue")):
                for i in range(n):
                    a = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
                    r, col = rng.integers(0, size - 8, 2)
                    a[r:r + 8, col:col + 8, c] = 250
                    buf = io.BytesIO()
                    Image.fromarray(a).save(buf, format="PNG")
                    zf.writestr(f"{split}/{name}/{i}.png", buf.getvalue())
    return path


def test_distill_on_an_image_folder_zip_with_user_nets(tmp_path, capsys, monkeypatch):
    from conftest import ran_to_end

    monkeypatch.setenv("FITNETS_CACHE", str(tmp_path / "cache"))
    data = write_folder_zip(tmp_path / "shapes.zip")
    nets = tmp_path / "nets.py"
    nets.write_text(NETS)
    common = ["device=cpu", "data.name=folder", f"data.path={data}", "data.val_size=12",
              "data.batch_size=16", "train.optim.name=adam", "train.optim.lr=0.01"]
    teacher = tmp_path / "teacher"
    assert main(["train", *common, f"model.name={nets}:teacher", "train.epochs=4",
                 "--out", str(teacher), "--quiet"]) == 0
    t_sum = json.loads((teacher / "summary.json").read_text())
    assert t_sum["test_acc"] > 0.6  # 3 classes: chance is 1/3
    for method, extra in (("fitnet", ["hints.stage.epochs=2", "hints.stage.optim.name=adam"]),
                          ("joint", [])):
        out = tmp_path / method
        code = main(["distill", *common, *extra, "--method", method,
                     "--teacher", f"{nets}:teacher", "--student", f"{nets}:student",
                     f"teacher.weights={teacher}", "hints.pairs=[[conv2, conv2]]",
                     "hints.regressor=conv1x1", "train.epochs=2", "--out", str(out),
                     "--quiet"])
        assert ran_to_end(code, out)  # 2 epochs of 24 images may end at chance: exit 3
        s = json.loads((out / "summary.json").read_text())
        assert s["dataset"] == "folder" and 0 <= s["test_acc"] <= 1
    assert main(["export", str(tmp_path / "joint"), "--formats", "state_dict"]) == 0


def test_profile_with_the_authors_ceil_pooling_counts_the_papers_teacher(capsys):
    # cuda-convnet's ceil pooling: 16/7/5 maps, 732.3M multiplications (paper: ~725M)
    assert main(["profile", "--teacher", "cifar_teacher", "--students", "fitnet1",
                 "resnet20", "--pool-rounding", "ceil", "--batch-size", "1", "--repeats", "1",
                 "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert "732.3M" in rows["cifar_teacher"] and "16.25M" in rows["cifar_teacher"]
    assert "30.08M" in rows["fitnet1"]  # its pools fit exactly: the same either way
    assert "maxout pooling ceil" in out
