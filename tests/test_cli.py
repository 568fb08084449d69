"""The command line: exit codes, one-paragraph errors, the layers and config commands."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fitnets.cli import main


@pytest.mark.parametrize("argv,words", [
    (["train", "trian.epochs=1"], ["unknown config key 'trian'", "Did you mean 'train'"]),
    (["distill", "a.yaml", "b.yaml"], ["at most one recipe"]),
    (["distill", "missing.yaml"], ["does not exist"]),
    (["train", "model.name=resnet9000", "data.name=digits", "device=cpu"], ["resnet9000"]),
    (["distill", "--resume", "/nonexistent/run"], ["not a run directory"]),
    (["layers", "mnist_student", "--input-shape", "a,b"], ["--input-shape"]),
])
def test_user_errors_exit_2_with_one_paragraph_and_no_traceback(argv, words, capsys, tmp_path,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fitnets: error: ") and "Traceback" not in err
    for w in words:
        assert w in err


def test_distill_without_teacher_weights_says_how_to_get_them(capsys, tmp_path, tiny_mnist):
    code = main(["distill", "method=kd", f"data.root={tiny_mnist}", "device=cpu",
                 f"out={tmp_path / 'r'}", "--quiet"])
    assert code == 2
    assert "teacher.weights" in capsys.readouterr().err


def test_layers_prints_names_and_output_shapes(capsys):
    assert main(["layers", "mnist_student"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("conv4 "))
    assert "16x4x4" in line
    assert main(["layers", "--list"]) == 0
    assert "fitnet4" in capsys.readouterr().out


def test_config_doc_and_resolved_config(capsys):
    assert main(["config", "--doc"]) == 0
    doc = capsys.readouterr().out
    assert "kd.tau_squared" in doc and "Hinton" in doc
    assert main(["config", "kd.tau=2"]) == 0
    assert "tau: 2" in capsys.readouterr().out


def test_train_then_resume_through_the_command_line(tmp_path, tiny_mnist):
    out = tmp_path / "run"
    args = ["train", f"data.root={tiny_mnist}", "device=cpu", "model.name=mnist_student",
            "train.epochs=1", "--out", str(out), "--quiet"]
    from conftest import ran_to_end

    code = main(args)
    assert ran_to_end(code, out)  # 1 tiny epoch may end at chance: exit 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == {"train": 1}
    # resuming a finished run only finishes it again, with the same verdict
    assert main(["train", "--resume", str(out), "--quiet"]) == code


def test_module_entry_point_runs(tmp_path):
    import os
    from pathlib import Path

    import fitnets

    env = {**os.environ, "PYTHONPATH": str(Path(fitnets.__file__).parents[1])}
    r = subprocess.run([sys.executable, "-m", "fitnets", "layers", "mnist_teacher"],
                       capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0 and "conv2" in r.stdout
