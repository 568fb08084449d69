"""Bad input gets clear errors; checkpoints are safe to load; trouble leaves a resumable run.

Everything here is in-process through ``fitnets.cli.main`` (exit code 2, one paragraph, no
traceback) or the checkpoint API; real processes are in test_reliability.py.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fitnets.checkpoint as ckpt_mod
from fitnets.checkpoint import Checkpoints
from fitnets.cli import main
from fitnets.errors import FitnetsError

# integration: hypothesis (.ci/run's locked run checks these under its pins)
pytestmark = pytest.mark.integration

TINY = ["device=cpu", "data.name=mnist", "data.download=false", "data.val_size=20",
        "data.batch_size=25", "train.optim.name=adam", "train.optim.lr=0.003"]


def cli(argv: list[str]) -> int:
    return main([*argv, "--quiet"])  # argparse wants options after all the key=value words


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import ran_to_end, write_tiny_mnist

    root = write_tiny_mnist(tmp_path_factory.mktemp("safe") / "data", n_train=120, n_test=40)
    teacher = tmp_path_factory.mktemp("safe") / "teacher"
    assert ran_to_end(cli(["train", *TINY, f"data.root={root}", "train.epochs=1",
                           f"out={teacher}"]), teacher)
    return root, teacher


def one_paragraph_error(capsys) -> str:
    err = capsys.readouterr().err.split("\r")[-1]  # after any download progress bar
    assert err.startswith("fitnets: error: ") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------- checkpoints


def saved_three(tmp_path) -> Checkpoints:
    c = Checkpoints(tmp_path)
    for i in (1, 2, 3):
        c.save({"i": i, "w": torch.full((50,), float(i))})
    return c


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "no-sidecar"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_with_a_warning(tmp_path, damage):
    c = saved_three(tmp_path)
    newest = c.dir / "ckpt-000003.pt"
    assert sorted(p.name for p in c.dir.iterdir()) == [
        "ckpt-000002.pt", "ckpt-000002.sha256", "ckpt-000003.pt", "ckpt-000003.sha256"]
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "corrupt":
        newest.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    else:
        newest.with_suffix(".sha256").unlink()
    with pytest.warns(UserWarning, match="ckpt-000003.pt is unusable.*falling back"):
        assert c.load_latest()["i"] == 2


def test_no_usable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    c = saved_three(tmp_path)
    for p in c.dir.glob("*.pt"):
        p.write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(FitnetsError, match="no usable checkpoint"):
        c.load_latest()


class Evil:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def evil_files(tmp_path) -> tuple[Path, list[bytes]]:
    marker = tmp_path / "PWNED"
    blobs = [pickle.dumps({"state_dict": Evil(marker)}), ckpt_mod.to_bytes({"x": Evil(marker)})]
    return marker, blobs


def test_the_malicious_pickle_works_when_loaded_unsafely(tmp_path):
    marker, blobs = evil_files(tmp_path)
    pickle.loads(blobs[0])  # shows the planted files below would really run code
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # our evil file
@pytest.mark.parametrize("form", [0, 1], ids=["raw-pickle", "torch-zip"])
def test_a_malicious_checkpoint_with_a_valid_checksum_runs_nothing(tmp_path, capsys, form):
    marker, blobs = evil_files(tmp_path)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("device: cpu\n")
    (run / "checkpoints" / "ckpt-000001.pt").write_bytes(blobs[form])
    (run / "checkpoints" / "ckpt-000001.sha256").write_text(hashlib.sha256(blobs[form]).hexdigest())
    with pytest.raises(FitnetsError, match="weights-only"):
        Checkpoints(run).load_latest()
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    assert "ckpt-000001.pt" in one_paragraph_error(capsys)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # our evil file
@pytest.mark.parametrize("form", [0, 1], ids=["raw-pickle", "torch-zip"])
def test_a_malicious_teacher_file_runs_nothing(tiny, tmp_path, capsys, form):
    root, _ = tiny
    marker, blobs = evil_files(tmp_path)
    (tmp_path / "teacher.pt").write_bytes(blobs[form])
    assert cli(["distill", *TINY, f"data.root={root}", "method=kd",
                 f"teacher.weights={tmp_path / 'teacher.pt'}", f"out={tmp_path / 'r'}"]) == 2
    err = one_paragraph_error(capsys)
    assert "teacher.pt" in err and "weights-only" in err
    assert not marker.exists()


def test_a_checkpoint_that_is_not_ours_is_reported(tmp_path, capsys):
    run = tmp_path / "run"
    Checkpoints(run).save({"just": torch.zeros(2)})
    (run / "config.yaml").write_text("device: cpu\n")
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    assert "not a fitnets checkpoint" in one_paragraph_error(capsys)


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("extra,words", [
    (["data.batchsize=3"], ["unknown config key 'data.batchsize'", "'data.batch_size'"]),
    (["train.epochs=three"], ["'train.epochs' must be an integer", "'three'"]),
    (["train.optim.lr=-1"], ["'train.optim.lr' must be > 0", "-1"]),
    (["kd.tau=0"], ["'kd.tau' must be > 0"]),
    (["method=fitnets"], ["'method' must be one of", "Did you mean 'fitnet'"]),
    (["train.optim.lr=!!python/object/apply:os.system [touch PWNED]"], ["cannot read"]),
    (["hints.pairs=[[nope, conv2]]"], ["no layer named 'nope'", "conv1", "conv4"]),
    (["hints.pairs=[[conv4, conv1]]", "hints.regressor=conv"], ["spatially larger"]),
    (["hints.pairs=[[classifier, conv2]]", "hints.regressor=conv"], ["needs feature maps"]),
    (["hints.pairs=[[conv4, conv2]]", "hints.regressor=none"], ["same shape"]),
    (["teacher.name=mnist_student"], ["do not fit", "Unexpected keys"]),
    (["hints.pairs=[[conv1]]"], ["must be [guided, hint]"]),
])
def test_bad_configuration_is_one_paragraph_and_exit_2(tiny, tmp_path, capsys, monkeypatch,
                                                       extra, words):
    root, teacher = tiny
    monkeypatch.chdir(tmp_path)
    code = cli(["distill", *TINY, f"data.root={root}", f"teacher.weights={teacher}",
                 "hints.stage.epochs=1", "train.epochs=1", f"out={tmp_path / 'r'}", *extra])
    assert code == 2
    err = one_paragraph_error(capsys)
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "PWNED").exists()


KEYS = [k for k, default, _ in __import__("fitnets.config", fromlist=["describe"]).describe()]
VALUES = st.one_of(
    st.sampled_from(["1", "0", "-1", "1e30", ".nan", "-.inf", "true", "null", "~", "[]", "{}",
                     "[[a, b]]", "[1, [2, {x: 3}]]", "{a: {b: c}}", "'", "[", "{a", "a: b: c",
                     "!!python/object/apply:os.system [echo hi]", "!!binary aGk=", "&a [*a]",
                     "2020-01-01", "0x1F", "1_000", "cpu", "cuda:9", "mnist", "fitnet", "a" * 300,
                     "\t", "--", "=", "%", "@", "`x`", "? [a]\n: b", "{[a]: 1}"]),
    st.text(max_size=20).filter(lambda s: "\x00" not in s))
WORDS = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), VALUES),
    st.builds(lambda k, v: f"{k}={v}", st.text(max_size=12).filter(lambda s: "\x00" not in s),
              VALUES),
    st.sampled_from(["--resume", "--out", "--quiet", "--method", "kd", "--doc", "--list",
                     "--input-shape", "1,2,3", "0,0,0", "3,1000000,1", "mnist_student",
                     "fitnet4", "os:system", "math:sqrt", "recipe.yaml", "bad.yaml",
                     "missing.yaml", ".", "/", "-h"]),
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(command=st.sampled_from(["train", "distill", "config", "layers", "demo", "nope"]),
       words=st.lists(WORDS, max_size=6), recipe=st.one_of(st.none(), VALUES))
def test_random_command_lines_never_give_a_traceback(command, words, recipe, tmp_path_factory,
                                                     monkeypatch, capsys):
    import fitnets.demo
    import fitnets.run

    trained = []
    monkeypatch.setattr(fitnets.run, "run", lambda *a, **k: trained.append(a) or {})
    monkeypatch.setattr(fitnets.demo, "demo", lambda *a, **k: None)
    work = tmp_path_factory.mktemp("fuzz")
    monkeypatch.chdir(work)
    (work / "bad.yaml").write_text("a: [\n")
    if recipe is not None:
        (work / "recipe.yaml").write_text(recipe)
    try:
        code = main([command, *words])
    except SystemExit as e:  # argparse's own usage errors (and -h)
        code = e.code
    assert code in (0, 2)
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("argv,words", [  # what the random command lines turned up
    (["layers", "mnist_student", "--input-shape", "1,2,3"], ["cannot run on inputs"]),
    (["layers", "os:system"], ["cannot be called as a model builder"]),
    (["config", "train.optim.lr=1e-3"], None),  # YAML 1.1 reads 1e-3 as a string
])
def test_parser_findings(argv, words, capsys):
    if words is None:
        assert main(argv) == 0 and "lr: 0.001" in capsys.readouterr().out
        return
    assert main(argv) == 2
    err = one_paragraph_error(capsys)
    assert all(w in err for w in words)


# --------------------------------------------------------------------------- data


def test_truncated_idx_through_the_command_line(tmp_path, capsys):
    from conftest import write_tiny_mnist

    root = write_tiny_mnist(tmp_path / "data", n_train=40, n_test=20)
    f = root / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    assert cli(["train", *TINY, f"data.root={root}", f"out={tmp_path / 'r'}"]) == 2
    err = one_paragraph_error(capsys)
    assert "t10k-images-idx3-ubyte is truncated" in err and "download or copy it again" in err


def test_a_download_with_the_wrong_checksum_is_not_used(tmp_path, capsys, monkeypatch):
    import fitnets.data.mnist as mnist

    server = tmp_path / "server"
    server.mkdir()
    for base in mnist.FILES:
        (server / (base + ".gz")).write_bytes(b"not the file you are looking for")
    monkeypatch.setattr(mnist, "MIRRORS", (server.as_uri() + "/",))
    root = tmp_path / "data"
    args = [a for a in TINY if a != "data.download=false"]
    assert cli(["train", *args, f"data.root={root}", f"out={tmp_path / 'r'}"]) == 2
    err = one_paragraph_error(capsys)
    assert "Checksum mismatch" in err and "it was deleted" in err and "Place the file" in err
    assert not list((root / "mnist").iterdir())  # neither the file nor a partial download


@pytest.mark.parametrize("classes", [[], ["solo"]], ids=["empty", "one-class"])
def test_empty_or_one_class_image_folder_through_the_command_line(tmp_path, capsys, classes):
    from PIL import Image

    for split in ("train", "test"):
        for c in classes:
            (tmp_path / "imgs" / split / c).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / split / c / "a.png")
    (tmp_path / "imgs").mkdir(exist_ok=True)
    assert main(["train", "device=cpu", "data.name=folder", f"data.path={tmp_path / 'imgs'}",
                 f"data.root={tmp_path / 'root'}", f"out={tmp_path / 'r'}", "--quiet"]) == 2
    err = one_paragraph_error(capsys)
    assert ("no images" if not classes else "only one class") in err


# --------------------------------------------------------------------------- numerical trouble


def test_a_non_finite_loss_names_stage_epoch_step_and_keeps_the_last_checkpoint(
        tiny, tmp_path, capsys, monkeypatch):
    from fitnets.trainer import Trainer

    root, _ = tiny
    real_fit = Trainer.fit

    def fit_with_nan_at_epoch_2(self, stage, index=0, resume=None):
        loss, start = stage.loss, stage.start_epoch
        stage.start_epoch = lambda e: (setattr(stage, "now", e), start(e))[1]
        stage.loss = lambda b: ((loss(b)[0] * float("nan"), {})
                                if stage.now == 2 else loss(b))
        return real_fit(self, stage, index, resume)

    monkeypatch.setattr(Trainer, "fit", fit_with_nan_at_epoch_2)
    out = tmp_path / "r"
    args = ["train", *TINY, f"data.root={root}", "model.name=mnist_student", "train.epochs=3"]
    assert cli([*args, f"out={out}"]) == 2
    err = one_paragraph_error(capsys)
    assert "the train loss became nan at epoch 2, step 1" in err and "checkpoint is kept" in err
    assert Checkpoints(out).load_latest()["loop"]["epoch"] == 1
    monkeypatch.setattr(Trainer, "fit", real_fit)
    from conftest import ran_to_end

    # 3 tiny epochs may end at chance: exit 3
    assert ran_to_end(main(["train", "--resume", str(out)]), out)
    assert "resuming at stage train, epoch 1" in capsys.readouterr().out
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_a_huge_learning_rate_stops_with_the_divergence_message(tiny, tmp_path, capsys):
    root, _ = tiny
    assert cli(["train", *TINY, f"data.root={root}", "model.name=mnist_student",
                 "train.optim.name=sgd", "train.optim.lr=1e30", "train.epochs=2",
                 f"out={tmp_path / 'r'}"]) == 2
    assert "training diverged" in one_paragraph_error(capsys)


# --------------------------------------------------------------------------- environment


@pytest.mark.parametrize("where", ["under-a-file", "in-proc"])
def test_an_unwritable_run_directory_fails_before_any_work(tmp_path, capsys, monkeypatch, where):
    import fitnets.run

    monkeypatch.setattr(fitnets.run, "prepare", lambda *a: pytest.fail("too late"))
    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "a-file" / "run" if where == "under-a-file" else Path("/proc/fitnets-run")
    assert main(["train", "device=cpu", f"out={out}", "--quiet"]) == 2
    err = one_paragraph_error(capsys)
    assert f"cannot write to run directory '{out}'" in err and "writable out=DIR" in err


def test_a_full_disk_during_a_checkpoint_is_clear_and_keeps_the_previous(tiny, tmp_path, capsys,
                                                                          monkeypatch):
    root, _ = tiny
    real_write, calls = ckpt_mod._write_all, []

    def fill_up(f, data):
        calls.append(f.name)
        if "ckpt-000002.pt" in f.name:  # the epoch-2 checkpoint: half written, then ENOSPC
            f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(f, data)

    monkeypatch.setattr(ckpt_mod, "_write_all", fill_up)
    out = tmp_path / "r"
    args = ["train", *TINY, f"data.root={root}", "model.name=mnist_student", "train.epochs=3"]
    assert cli([*args, f"out={out}"]) == 2
    err = one_paragraph_error(capsys)
    assert "ckpt-000002.pt': No space left on device" in err and "--resume" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "ckpt-000001.pt", "ckpt-000001.sha256"]  # no half-written file left
    assert Checkpoints(out).load_latest()["loop"]["epoch"] == 1
    monkeypatch.setattr(ckpt_mod, "_write_all", real_write)
    from conftest import ran_to_end

    assert ran_to_end(main(["train", "--resume", str(out)]), out)  # may end at chance: 3
    assert json.loads((out / "summary.json").read_text())["epochs"] == {"train": 3}
