"""Export of a run's student: files, round trips, ONNX when installed."""

import importlib.util
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import fitnets
from fitnets.checkpoint import load_weights, save_weights
from fitnets.errors import FitnetsError
from fitnets.export import export_run
from fitnets.models import build_model

# integration: onnx, onnxruntime, onnxscript, safetensors (.ci/run's locked run: its pins)
pytestmark = pytest.mark.integration

SRC = str(Path(fitnets.__file__).parents[1])
HAS_ORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))


def _fake_run(tmp_path, name="resnet20", batchnorm=True):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, batchnorm=batchnorm)
    # non-default BN statistics, so a student that was not loaded would give other outputs
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    run = tmp_path / "run"
    run.mkdir()
    save_weights({"model": name, "batchnorm": batchnorm, "num_classes": 10,
                  "input_shape": list(model.input_shape), "state_dict": model.state_dict(),
                  "preprocess": {"kind": "scale"}}, run / "model.pt")
    return run, model.eval()


def test_state_dict_and_torchscript_round_trip(tmp_path) -> None:
    run, model = _fake_run(tmp_path)
    info = export_run(run, formats=("state_dict", "torchscript"))
    out = run / "export"
    assert json.loads((out / "export.json").read_text()) == info
    assert info["files"]["torchscript"]["max_abs_diff"] <= 1e-4
    state = load_weights(out / "student_state_dict.pt")
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert load_weights(out / "preprocess.pt") == {"kind": "scale"}
    x = torch.randn(5, 3, 32, 32)  # another batch size than the trace's
    with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit.load; users still call it
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(out / "student.torchscript.pt"))
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-5)
    assert not (out / "student.onnx").exists()


def test_onnx_skipped_with_install_hint_when_missing(tmp_path, monkeypatch) -> None:
    run, _ = _fake_run(tmp_path, "mnist_student", batchnorm=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnx" else real(name, *a))
    info = export_run(run, out_dir=tmp_path / "elsewhere")
    assert "pip install 'fitnets[onnx]'" in info["skipped"]["onnx"]
    assert (tmp_path / "elsewhere" / "student.torchscript.pt").is_file()


@pytest.mark.skipif(not HAS_ORT, reason="needs onnx and onnxruntime (pip install 'fitnets[onnx]')")
def test_onnx_round_trip_with_dynamic_batch(tmp_path) -> None:
    import onnxruntime as ort

    run, model = _fake_run(tmp_path)
    info = export_run(run, formats=("onnx",))
    assert info["files"]["onnx"]["max_abs_diff"] <= 1e-4
    if importlib.util.find_spec("onnxscript"):  # the current exporter when it can run
        assert info["files"]["onnx"]["exporter"] == "torch.export (dynamo)"
    session = ort.InferenceSession(str(run / "export" / "student.onnx"),
                                   providers=["CPUExecutionProvider"])
    x = torch.randn(7, 3, 32, 32)
    (y,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(y), model(x), atol=1e-4)


def test_a_mismatched_check_raises_and_is_not_installed(tmp_path, monkeypatch) -> None:
    run, _ = _fake_run(tmp_path, "mnist_student", batchnorm=False)
    export_run(run, formats=("safetensors",))
    good = (run / "export" / "export.json").read_text()
    monkeypatch.setattr("fitnets.export._diff", lambda a, b: 1.0)
    with pytest.raises(FitnetsError, match="disagree.*previous export is unchanged"):
        export_run(run, formats=("safetensors", "state_dict"))
    assert (run / "export" / "export.json").read_text() == good  # the good one stays
    rejected = run / "export.rejected"  # the failed one, for inspection only
    assert json.loads((rejected / "export.json").read_text())["disagree"] == {"safetensors": 1.0}
    with pytest.raises(FitnetsError, match="failed its check"):
        fitnets.load_exported(rejected)


def test_bad_inputs(tmp_path) -> None:
    with pytest.raises(FitnetsError, match="does not exist"):
        export_run(tmp_path)
    save_weights({"state_dict": {}}, tmp_path / "model.pt")
    with pytest.raises(FitnetsError, match="not a run's model bundle"):
        export_run(tmp_path)
    with pytest.raises(FitnetsError, match="unknown export format"):
        export_run(tmp_path, formats=("tflite",))


@pytest.mark.parametrize("name,batchnorm", [("resnet20", True), ("mnist_student", False)])
def test_safetensors_and_torch_export_round_trip(tmp_path, name, batchnorm) -> None:
    from safetensors.torch import load_file

    run, model = _fake_run(tmp_path, name, batchnorm)
    info = export_run(run, formats=("safetensors", "torch_export"))
    out = run / "export"
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == name and config["num_classes"] == 10
    assert config["input_shape"] == list(model.input_shape)
    weights = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert info["files"]["safetensors"]["max_abs_diff"] <= 1e-5
    x = torch.randn(5, *model.input_shape)  # another batch size than the export's
    program = torch.export.load(str(out / "student.pt2")).module()
    with torch.no_grad():
        assert torch.allclose(program(x), model(x), atol=1e-5)


def test_safetensors_weights_load_as_a_teacher_and_a_crafted_pickle_is_refused(tmp_path):
    from safetensors.torch import save_file

    from fitnets.checkpoint import load_into

    model = build_model("mnist_student", num_classes=10)
    folder = tmp_path / "hf-style"
    folder.mkdir()
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    fresh = build_model("mnist_student", num_classes=10)
    load_into(fresh, folder, "mnist_student")  # a folder holding model.safetensors
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(),
                                                 model.state_dict().values()))
    load_into(fresh, folder / "model.safetensors", "mnist_student")  # the file itself
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(FitnetsError, match="cannot load .*bad.safetensors"):
        load_into(fresh, tmp_path / "bad.safetensors", "mnist_student")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(FitnetsError, match="weights-only loading"):
        load_into(fresh, tmp_path / "evil.pt", "mnist_student")


def test_a_ceil_pooled_untied_maxout_teacher_exports_from_its_recorded_options(tmp_path):
    import dataclasses

    from fitnets.models import MaxoutOptions

    opts = MaxoutOptions(pool_rounding="ceil", untied_biases=True)
    torch.manual_seed(0)
    model = build_model("mnist_teacher", num_classes=10, maxout=opts).eval()
    run = tmp_path / "run"
    run.mkdir()
    save_weights({"model": "mnist_teacher", "batchnorm": False, "num_classes": 10,
                  "maxout": dataclasses.asdict(opts), "input_shape": [1, 28, 28],
                  "state_dict": model.state_dict()}, run / "model.pt")
    info = export_run(run, formats=("safetensors", "torchscript"))
    assert info["files"]["safetensors"]["max_abs_diff"] <= 1e-5
    assert info["files"]["torchscript"]["max_abs_diff"] <= 1e-4


def test_an_export_folder_loads_back_as_model_and_preprocessing(tmp_path) -> None:
    from fitnets.data.preprocess import Preprocess

    run, model = _fake_run(tmp_path)
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3])
    bundle = load_weights(run / "model.pt")
    bundle["preprocess"] = Preprocess("standardize", tensors={"mean": mean, "std": std}
                                      ).state_dict()
    save_weights(bundle, run / "model.pt")
    export_run(run, formats=("safetensors",))
    loaded, pre = fitnets.load_exported(run / "export")
    assert pre.kind == "standardize" and torch.equal(pre.tensors["std"], std)
    raw = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 255
    by_hand = (raw / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pre(raw)), model(by_hand), rtol=1e-5, atol=1e-5)
    (run / "export" / "model.safetensors").unlink()
    with pytest.raises(FitnetsError, match="lacks model.safetensors"):
        fitnets.load_exported(run / "export")


# ------------------------------------------------ exports stand alone (issue 31)

MY_STUDENT = textwrap.dedent('''
    import torch
    from torch import nn

    class Student(nn.Module):
        def __init__(self, num_classes, in_channels):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, 6, 3, padding=1)
            self.bn = nn.BatchNorm2d(6)
            self.head = nn.Linear(6, num_classes)

        def forward(self, x):
            return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))

    def build_student(num_classes=10, in_channels=3):
        return Student(num_classes, in_channels)
''')


def _user_run(project, seed=0, run_name="run"):
    """A finished run of the user's own ``my_student.py:build_student``, recorded by the
    relative path it was given (as ``fitnets train`` from ``project`` records it). Call with
    the current directory in ``project``."""
    spec = "my_student.py:build_student"
    if not (project / "my_student.py").exists():
        (project / "my_student.py").write_text(MY_STUDENT)
    torch.manual_seed(seed)
    model = build_model(spec, num_classes=10, in_channels=1)
    model.bn.running_mean.uniform_(-0.5, 0.5)  # so that a model not loaded would differ
    model.bn.running_var.uniform_(0.5, 2.0)
    run = project / run_name
    run.mkdir(exist_ok=True)
    save_weights({"model": spec, "batchnorm": False, "num_classes": 10,
                  "input_shape": [1, 12, 12], "state_dict": model.state_dict(),
                  "preprocess": {"kind": "scale"}}, run / "model.pt")
    return run, model.eval()


def _outputs(folder):
    loaded, pre = fitnets.load_exported(folder)
    x = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(3)) * 255
    with torch.no_grad():
        return loaded(pre(x)), x / 255


def test_a_user_model_export_loads_from_another_directory_without_the_model_file(
        tmp_path, monkeypatch) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(project)
    run, model = _user_run(project)
    info = export_run(run, formats=("safetensors",))
    code = info["files"]["model_code"]
    assert code["path"] == "code/my_student.py" and code["function"] == "build_student"
    assert (run / "export" / "code" / "my_student.py").read_text() == MY_STUDENT
    assert json.loads((run / "export" / "config.json").read_text())["model_code"] == \
        "code/my_student.py:build_student"
    (project / "my_student.py").rename(elsewhere / "moved.py")  # the original is gone
    monkeypatch.chdir(elsewhere)
    got, x = _outputs(tmp_path / "project" / "run" / "export")
    with torch.no_grad():
        torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-5)


def test_a_copy_that_cannot_build_falls_back_to_the_torch_export_program(
        tmp_path, monkeypatch) -> None:
    # the model file imports a helper module of the user's, which the export does not carry
    project = tmp_path / "project"
    project.mkdir()
    (project / "my_layers.py").write_text(MY_STUDENT)
    (project / "my_student.py").write_text("from my_layers import build_student  # noqa\n")
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    run, model = _user_run(project)
    export_run(run, out_dir=project / "both", formats=("safetensors", "torch_export"))
    export_run(run, out_dir=project / "plain", formats=("safetensors",))
    monkeypatch.delitem(sys.modules, "my_layers")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(project)])
    (project / "my_layers.py").unlink()
    with pytest.warns(UserWarning, match="No module named 'my_layers'.*student.pt2"):
        got, x = _outputs(project / "both")
    with torch.no_grad():
        torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(FitnetsError, match="not modules it imports.*torch_export"):
        fitnets.load_exported(project / "plain")


def _export_cli(run, kill_at):
    env = {k: v for k, v in os.environ.items() if k != "FITNETS_TEST_KILL_AT"}
    env.update(FITNETS_TEST_KILL_AT=kill_at, PYTHONPATH=SRC)
    return subprocess.Popen([sys.executable, "-m", "fitnets", "export", str(run), "--formats",
                             "safetensors", "state_dict"], cwd=run.parent, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.skipif(not hasattr(os, "WUNTRACED"), reason="POSIX signals")
def test_a_killed_export_leaves_the_old_complete_export_or_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run, old_model = _user_run(tmp_path, seed=0)
    export_run(run, formats=("safetensors",))
    old = (run / "export" / "export.json").read_text()
    run, new_model = _user_run(tmp_path, seed=1)  # trained again: other weights

    # frozen after its 2nd file, then SIGKILLed from outside: the old export is in place
    # all along (a reader meanwhile gets it whole), the half one only in a hidden sibling
    proc = _export_cli(run, "export-file:2:STOP")
    try:
        _, status = os.waitpid(proc.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), proc.stderr.read()
        partial = [p.name for p in run.iterdir() if p.name.startswith(".export.partial-")]
        assert len(partial) == 1 and len(list((run / partial[0]).iterdir())) == 2
        got, x = _outputs(run / "export")
        with torch.no_grad():
            torch.testing.assert_close(got, old_model(x), rtol=1e-5, atol=1e-5)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stderr.close()
    assert (run / "export" / "export.json").read_text() == old

    # killed as the finished folder is put in place: the new export whole (an atomic swap),
    # or none where the OS cannot swap folders; never a mix
    proc = _export_cli(run, "export-install:1")
    proc.wait(timeout=120)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    if (run / "export").exists():
        got, x = _outputs(run / "export")
        with torch.no_grad():
            torch.testing.assert_close(got, new_model(x), rtol=1e-5, atol=1e-5)
    else:
        with pytest.raises(FitnetsError, match="does not exist"):
            fitnets.load_exported(run / "export")
    # the next export cleans up what the killed ones left beside it
    export_run(run, formats=("safetensors",))
    assert sorted(p.name for p in run.iterdir()) == ["export", "model.pt"]


def test_an_incomplete_export_folder_is_refused_with_its_reason(tmp_path) -> None:
    run, _ = _fake_run(tmp_path, "mnist_student", batchnorm=False)
    export_run(run, formats=("safetensors", "state_dict"))
    out = run / "export"

    def damaged(name, harm):
        folder = tmp_path / name
        shutil.copytree(out, folder)
        harm(folder)
        return folder

    cases = {
        "no export.json.*export writes last.*fitnets export RUN_DIR --out .*killed":
            damaged("killed", lambda f: (f / "export.json").unlink()),
        "incomplete: it lacks student_state_dict.pt .named in its export.json.*fitnets export":
            damaged("missing", lambda f: (f / "student_state_dict.pt").unlink()),
        "damaged: model.safetensors changed since the export.*fitnets export":
            damaged("changed", lambda f: (f / "model.safetensors").write_bytes(
                (f / "model.safetensors").read_bytes()[:-8] + bytes(8))),
        "unreadable export.json": damaged("cut", lambda f: (f / "export.json").write_text(
            (f / "export.json").read_text()[:40])),
        "does not exist": tmp_path / "never",
    }
    for reason, folder in cases.items():
        with pytest.raises(FitnetsError, match=reason):
            fitnets.load_exported(folder)
    fitnets.load_exported(out)  # the complete one loads
    (out / "export.json").unlink()  # a run's own export folder: the command to run
    with pytest.raises(FitnetsError, match=re.escape(f"re-run `fitnets export {run}`")):
        fitnets.load_exported(out)


def test_every_exported_file_has_the_mode_the_umask_gives(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run, _ = _user_run(tmp_path)
    for umask, file_mode, dir_mode in ((0o022, 0o644, 0o755), (0o027, 0o640, 0o750)):
        before = os.umask(umask)
        try:
            export_run(run, formats=("safetensors", "state_dict", "torchscript"))
        finally:
            os.umask(before)
        out = run / "export"
        modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode)
                 for p in [out, *out.rglob("*")]}
        assert {"model.safetensors", "code/my_student.py", "export.json",
                "student.torchscript.pt"} <= set(modes)
        assert modes == {name: dir_mode if (out / name).is_dir() else file_mode
                         for name in modes}


def test_export_replaces_only_an_export_folder(tmp_path, monkeypatch) -> None:
    run, _ = _fake_run(tmp_path, "mnist_student", batchnorm=False)
    with pytest.raises(FitnetsError, match="holds files that fitnets export did not write "
                                           r"\(model.pt\)"):
        export_run(run, out_dir=run, formats=("safetensors",))
    assert sorted(p.name for p in run.iterdir()) == ["model.pt"]
    # where folders cannot be swapped atomically: moved aside, then replaced
    monkeypatch.setattr("fitnets.export._exchange", lambda a, b: False)
    export_run(run, formats=("state_dict",))
    export_run(run, formats=("safetensors",))
    assert sorted(p.name for p in run.iterdir()) == ["export", "model.pt"]
    assert json.loads((run / "export" / "export.json").read_text())["files"].keys() == \
        {"preprocess", "safetensors"}
