"""Real processes: SIGKILL at chosen points and --resume, the run-directory lock.

Kill points come from the test hook FITNETS_TEST_KILL_AT=EVENT:N (fitnets/faults.py):
the process SIGKILLs itself after its N-th optimiser step ("step"), after its N-th complete
checkpoint ("save"), or halfway through its N-th atomic file write ("write").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import fitnets_cli, fitnets_env
from fitnets.checkpoint import Checkpoints, load_weights
from fitnets.cli import main

# 100 training images in batches of 25: 4 steps per epoch; 2 hint epochs, then 2 KD epochs
TINY = ["device=cpu", "data.name=mnist", "data.download=false", "data.val_size=20",
        "data.batch_size=25", "train.optim.name=adam", "train.optim.lr=0.003",
        "hints.stage.optim.name=adam", "hints.stage.optim.lr=0.003"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import write_tiny_mnist
    from fitnets.config import make_config
    from fitnets.run import run

    root = write_tiny_mnist(tmp_path_factory.mktemp("rel") / "data", n_train=120, n_test=40)
    teacher = tmp_path_factory.mktemp("rel") / "teacher"
    run(make_config(None, [*TINY, f"data.root={root}", "train.epochs=1"]), "train", teacher,
        verbose=False)
    return root, teacher


def distill_args(root, teacher) -> list[str]:
    return ["distill", *TINY, f"data.root={root}", f"teacher.weights={teacher}",
            "method=fitnet", "hints.stage.epochs=2", "train.epochs=2", "data.augment_pad=2",
            "data.augment_flip=true"]


def metrics(run_dir: Path) -> list[dict]:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        r.pop("time")
    return records


def test_sigkill_at_many_points_then_resume_is_bit_identical(tiny, tmp_path):
    root, teacher = tiny
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    from conftest import ran_to_end

    # the reference and the last resume run in this process (a process start is ~3 s of CI);
    # the killed runs are real processes, with this process's thread count
    verdict = main([*distill_args(root, teacher), f"out={ref}", "--quiet"])
    assert ran_to_end(verdict, ref)  # a tiny run may end at chance: exit 3

    # one run killed five times; each resumed process counts its events from zero again
    kills = [
        ("step:6", "inside stage 1 (epoch 2, after the epoch-1 checkpoint)"),
        ("save:2", "at the stage transition (the checkpoint that closes stage 1)"),
        ("step:6", "inside stage 2 (KD epoch 2)"),
        ("write:1", "halfway through the KD epoch-2 checkpoint file"),
        ("write:2", "halfway through that checkpoint's checksum file"),
    ]
    for i, (point, where) in enumerate(kills):
        args = [*distill_args(root, teacher), f"out={cut}"] if i == 0 else [
            "distill", "--resume", str(cut)]
        r = fitnets_cli(args, kill_at=point)
        assert r.returncode == -signal.SIGKILL, (where, r.returncode, r.stderr)
        assert not (cut / "summary.json").exists()
        if point == "write:2":  # the newest .pt has no checksum: it must not be trusted
            assert "falling back" in fitnets_cli(["distill", "--resume", str(cut)],
                                                 kill_at="save:1").stderr
            # (that resume was itself killed right after writing its first checkpoint)
    assert main(["distill", "--resume", str(cut), "--quiet"]) == verdict  # the same verdict

    want = load_weights(ref / "model.pt")["state_dict"]
    got = load_weights(cut / "model.pt")["state_dict"]
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert metrics(cut) == metrics(ref)
    assert [(m["stage"], m["epoch"]) for m in metrics(cut)] == [
        ("hints", 1), ("hints", 2), ("kd", 1), ("kd", 2)]
    assert not list((cut / "checkpoints").glob(".*tmp*"))  # a killed writer's leftovers go


def test_second_run_on_a_locked_directory_fails_and_the_first_is_unharmed(tiny, tmp_path):
    root, _ = tiny
    out = tmp_path / "run"
    args = ["train", *TINY, f"data.root={root}", "model.name=mnist_student", "train.epochs=2",
            f"out={out}", "--quiet"]
    first = subprocess.Popen([sys.executable, "-m", "fitnets", *args],
                             env=fitnets_env("save:1:STOP"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, status = os.waitpid(first.pid, os.WUNTRACED)  # frozen after its first checkpoint
        assert os.WIFSTOPPED(status)
        # the second process: on --resume it meets the lock; as a fresh run, the old config
        assert main(["train", "--resume", str(out), "--quiet"]) == 2
        assert main(args) == 2
    finally:
        os.kill(first.pid, signal.SIGCONT)
        first.wait(timeout=300)
    from conftest import ran_to_end

    assert ran_to_end(first.returncode, out), first.stderr.read()  # may end at chance: 3
    first.stderr.close()
    assert [(m["stage"], m["epoch"]) for m in metrics(out)] == [("train", 1), ("train", 2)]
    assert json.loads((out / "summary.json").read_text())["epochs"] == {"train": 2}
    assert Checkpoints(out).load_latest()["stage_index"] == 1


def test_lock_error_text(tiny, tmp_path, capsys):
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("device: cpu\n")
    with open(out / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["train", "--resume", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "another fitnets process is using" in err and "Traceback" not in err


def test_a_bad_key_through_a_real_process(tmp_path):
    r = fitnets_cli(["train", "data.batchsize=3"], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("fitnets: error: unknown config key 'data.batchsize'")
    assert "Did you mean 'data.batch_size'" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
