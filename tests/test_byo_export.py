"""Export of a run's student: files, round trips, ONNX when installed."""

import importlib.util
import json
import warnings

import pytest
import torch

from fitnets.checkpoint import load_weights, save_weights
from fitnets.errors import FitnetsError
from fitnets.export import export_run
from fitnets.models import build_model

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


def test_a_mismatched_check_raises(tmp_path, monkeypatch) -> None:
    run, _ = _fake_run(tmp_path, "mnist_student", batchnorm=False)
    monkeypatch.setattr("fitnets.export._diff", lambda a, b: 1.0)
    with pytest.raises(FitnetsError, match="disagree"):
        export_run(run, formats=("torchscript",))
    assert json.loads((run / "export" / "export.json").read_text())["files"]["torchscript"][
        "max_abs_diff"] == 1.0


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
    import fitnets
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
