"""Your own data (issue 13): folders of real photos, ImageNet's layout, streaming larger than
a memory cap, exact resume of a killed streamed run, Python datasets, torchrun."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

import fitnets
from conftest import COLOURS, fitnets_cli, photos
from fitnets.checkpoint import load_weights
from fitnets.cli import main
from fitnets.data import load_dataset

# integration: Pillow (.ci/run's locked run checks these under its pins)
pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
FAST = ["device=cpu", "data.name=folder", "data.batch_size=16", "data.val_size=12",
        "data.preprocess=standardize",
        "train.optim.name=adam", "train.optim.lr=0.003", "model.name=resnet20", "--quiet"]


@pytest.mark.slow  # trainings: 10-50 s
def test_a_folder_of_mixed_size_jpegs_trains_end_to_end_through_the_cli(tmp_path, capsys):
    p = photos(tmp_path / "photos")
    args = ["train", *FAST, f"data.path={p}", f"data.root={tmp_path}", "train.epochs=3"]
    assert main([*args, f"out={tmp_path / 'refused'}"]) == 2
    assert "data.image_size=N" in capsys.readouterr().err  # what to set, by its config key
    assert main([*args, "data.image_size=32", f"out={tmp_path / 'r'}"]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["epochs"] == {"train": 3} and summary["test_acc"] > 0.5
    assert load_weights(tmp_path / "r" / "model.pt")["input_shape"] == [3, 32, 32]


def test_grayscale_is_detected_and_rgb_wins_when_mixed(tmp_path):
    p = photos(tmp_path / "gray", gray=True, ext="png")
    ds = load_dataset("folder", tmp_path, path=str(p), mode="auto", image_size=16, val_size=0)
    assert ds.input_shape == (1, 16, 16)
    Image.new("RGB", (20, 30), (9, 200, 9)).save(p / "test" / "dog" / "colour.png")
    ds = load_dataset("folder", tmp_path, path=str(p), mode="auto", image_size=16, val_size=0)
    assert ds.input_shape == (3, 16, 16)


def test_imagenet_layout_val_is_the_validation_and_test_split(tmp_path):
    p = photos(tmp_path / "inet", n_train=8, n_test=4, layout=("train", "val"), ext="JPEG")
    ds = load_dataset("folder", tmp_path, path=str(p), image_size=24)
    assert len(ds.train) == 24 and len(ds.val) == 12 and len(ds.test) == 12  # nothing held out
    assert ds.classes == sorted(COLOURS)
    assert sorted(ds.val.y.tolist()) == [0] * 4 + [1] * 4 + [2] * 4


@pytest.mark.parametrize("mode", ["memory", "stream"])
def test_bad_images_are_named_or_skipped_and_counted(tmp_path, capsys, mode):
    p = photos(tmp_path / "p", n_train=6, n_test=3)
    (p / "train" / "owl" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    args = ["train", *FAST, f"data.path={p}", f"data.root={tmp_path}", "data.image_size=32",
            f"data.mode={mode}", "data.workers=0", "train.epochs=1", "data.val_size=3"]
    assert main([*args, f"out={tmp_path / 'a'}"]) == 2
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "data.skip_bad_images=true" in err
    from conftest import ran_to_end

    # 1 epoch of 6 photos may end at chance: exit 3
    assert ran_to_end(main([*args, "data.skip_bad_images=true", f"out={tmp_path / 'b'}"]),
                      tmp_path / "b")


def test_a_folder_over_the_memory_cap_streams(tmp_path, capsys):
    p = photos(tmp_path / "p")
    args = ["train", *FAST[:-1], f"data.path={p}", f"data.root={tmp_path}",
            "data.image_size=32", "train.epochs=1"]
    assert main([*args, "data.memory_limit_gb=1", f"out={tmp_path / 'm'}"]) == 0
    assert "memory mode" in capsys.readouterr().out
    assert main([*args, "data.memory_limit_gb=0.0001", "data.workers=2",
                 f"out={tmp_path / 's'}"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"GiB as float32 \(limit 0\.0 GiB\): stream mode; 2 loader workers", out)
    assert "img/s" in out  # the epoch line's throughput
    m, s = (json.loads((tmp_path / d / "summary.json").read_text()) for d in "ms")
    assert m["test_acc"] == s["test_acc"]  # same order, same preprocessing: the same run


def _same_run(a: Path, b: Path) -> None:
    wa, wb = load_weights(a / "model.pt")["state_dict"], load_weights(b / "model.pt")["state_dict"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    la, lb = ([{k: v for k, v in json.loads(x).items() if k != "time"}
               for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (a, b))
    assert la == lb


@pytest.mark.slow
def test_a_killed_streaming_run_resumes_mid_epoch_to_the_same_weights_and_metrics(tmp_path,
                                                                                  capsys):
    p = photos(tmp_path / "p", n_train=24)
    args = ["train", *FAST, f"data.path={p}", f"data.root={tmp_path}", "data.image_size=32",
            "data.mode=stream", "data.workers=2", "data.random_crop=true",
            "data.augment_flip=true", "train.epochs=2", "checkpoint_steps=2"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert main([*args, f"out={ref}", "--quiet"]) == 0  # in this process, as the resume
    # 60 training images, batch 16: 4 steps an epoch; killed after step 3 (checkpoint at 2),
    # in a real process with this one's thread count
    killed = fitnets_cli([*args, f"out={cut}"], kill_at="step:3", quiet=False)
    assert killed.returncode == -9, killed.stderr
    capsys.readouterr()
    assert main(["train", "--resume", str(cut)]) == 0
    assert "resuming at stage train, epoch 0, then step 2 of epoch 1" in capsys.readouterr().out
    _same_run(ref, cut)


@pytest.mark.slow  # trainings: 10-50 s
def test_the_readme_python_example_distills_a_user_dataset(tmp_path, monkeypatch):
    text = README.read_text()
    section = text[text.index("**3. Your own Python objects.**"):]
    start = section.index("```python") + len("```python")
    code = section[start:section.index("```", start)]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    teacher, student = scope["teacher"], scope["student"]
    assert [s["name"] for s in student.summary["stages"]] == ["hints:0", "kd"]
    assert student.summary["stages"][0]["regressor"] == "conv"
    assert student.summary["model"] == "python:Sequential"
    assert teacher.summary["test_acc"] > 0.7 and student.summary["test_acc"] > 0.6
    # the returned student is the user's module, trained: its accuracy is the summary's
    x, y = scope["test"].tensors
    with torch.no_grad():
        acc = (student.model(x).argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(student.summary["test_acc"])
    assert (tmp_path / "runs" / "my-student" / "checkpoints").is_dir()


class SlowImages(torch.utils.data.Dataset):
    """A dataset whose reads take longer than the model's steps (a slow disk)."""

    def __len__(self):
        return 48

    def __getitem__(self, i):
        import time

        time.sleep(0.05)
        return torch.full((3, 8, 8), float(i % 2)), i % 2


@pytest.mark.slow  # trainings: 10-50 s
def test_a_loader_that_cannot_keep_up_is_named_as_the_bottleneck(tmp_path, capsys):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2))
    fitnets.train(model=net, train=SlowImages(), test=SlowImages(), out=tmp_path / "r",
                  overrides=["device=cpu", "data.workers=0", "data.batch_size=16",
                             "train.epochs=1"])
    out = capsys.readouterr().out
    assert re.search(r"the data loader is the bottleneck: \d+% of the epoch was spent waiting "
                     r"for images\. Raise data\.workers \(now 0\)", out)
    assert re.search(r"\(\d+\.\ds, \d+ img/s\)", out)  # the epoch line's throughput


@pytest.mark.slow  # a training: seconds
def test_in_memory_batches_are_never_blamed_on_a_loader(tmp_path, capsys, monkeypatch):
    """In memory there is no loader to tune: however long the batches take to cut (here
    stretched to most of the epoch, as when the process was stopped while cutting one), no
    advice to raise workers or to load the data into memory, which it already is."""
    import time

    from fitnets.data.memory import Data

    cut = Data.train_batches

    def slow(self, *args, **kwargs):
        for batch in cut(self, *args, **kwargs):
            time.sleep(0.25)
            yield batch

    monkeypatch.setattr(Data, "train_batches", slow)
    fitnets.train(model=torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)),
                  out=tmp_path / "r", overrides=[
                      "device=cpu", "data.name=digits", "data.train_limit=300",
                      "data.val_size=60", "data.test_limit=60", "data.batch_size=16",
                      "train.epochs=1"])
    out = capsys.readouterr().out
    assert "bottleneck" not in out and "data.workers" not in out
    assert re.search(r"\(\d+\.\ds, \d+ img/s\)", out)  # the epoch line still says its pace
