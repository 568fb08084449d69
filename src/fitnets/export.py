"""Export a finished run's student; then check every file against the PyTorch model.

Formats: ``safetensors`` (``model.safetensors`` + ``config.json``, the layout timm and
Hugging Face use; no pickle), ``state_dict`` (a plain ``torch.save``), ``torch_export``
(a ``torch.export`` program, ``.pt2``, dynamic batch), ``torchscript`` and ``onnx``.

Reads ``RUN/model.pt`` (weights-only), rebuilds the network by name, loads the weights and
writes the files into ``RUN/export`` (or ``out_dir``). The check runs one random batch
through the PyTorch model and through each exported file and records the largest absolute
difference; a difference above ``TOLERANCE`` is an error, not a warning, since a silently
different exported model is worse than none.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fitnets.checkpoint import load_safetensors, load_weights, save_weights
from fitnets.data.preprocess import Preprocess
from fitnets.errors import FitnetsError
from fitnets.models import build_described, load_run_model

FORMATS = ("safetensors", "state_dict", "torch_export", "torchscript", "onnx")
TOLERANCE = 1e-4
ONNX_MISSING = "skipped: onnx is not installed (pip install 'fitnets[onnx]')"


def export_run(
    run_dir: str | Path, out_dir: str | Path | None = None, formats: tuple = FORMATS
) -> dict[str, Any]:
    """Export the student of ``run_dir``; returns (and writes as export.json) what was done."""
    run_dir = Path(run_dir)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise FitnetsError(f"unknown export format(s) {unknown}; choose from {', '.join(FORMATS)}.")
    out = Path(out_dir) if out_dir is not None else run_dir / "export"
    out.mkdir(parents=True, exist_ok=True)
    model, bundle = load_run_model(run_dir)
    shape = tuple(int(s) for s in bundle["input_shape"])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, *shape, generator=gen)  # traced / exported with batch 2 ...
    check = torch.randn(3, *shape, generator=gen)  # ... checked with 3: the batch is dynamic
    with torch.no_grad():
        reference = model(check)

    info: dict[str, Any] = {"model": bundle["model"], "num_classes": int(bundle["num_classes"]),
                            "input_shape": list(shape), "files": {}, "skipped": {}}
    if "preprocess" in bundle:
        save_weights(bundle["preprocess"], out / "preprocess.pt")
        info["files"]["preprocess"] = {"path": "preprocess.pt",
                                       "what": "preprocessing state (apply before the model)"}
    if "safetensors" in formats:
        info["files"]["safetensors"] = _safetensors(model, bundle, shape, check, reference, out)
    if "torch_export" in formats:
        info["files"]["torch_export"] = _torch_export(model, x, check, reference, out)
    if "state_dict" in formats:
        save_weights(model.state_dict(), out / "student_state_dict.pt")
        info["files"]["state_dict"] = {"path": "student_state_dict.pt",
                                       "what": "plain state dict of the student (no regressor)"}
    if "torchscript" in formats:
        info["files"]["torchscript"] = _torchscript(model, x, check, reference, out)
    if "onnx" in formats:
        if importlib.util.find_spec("onnx") is None:
            info["skipped"]["onnx"] = ONNX_MISSING
        else:
            info["files"]["onnx"] = _onnx(model, x, check, reference, out)
    (out / "export.json").write_text(json.dumps(info, indent=2) + "\n")
    bad = {k: v["max_abs_diff"] for k, v in info["files"].items()
           if v.get("max_abs_diff") is not None and v["max_abs_diff"] > TOLERANCE}
    if bad:
        raise FitnetsError(f"exported model(s) disagree with PyTorch beyond {TOLERANCE}: {bad} "
                           f"(see {out / 'export.json'}).")
    return info


def load_exported(folder: str | Path) -> tuple[nn.Module, Preprocess | None]:
    """The network and preprocessing of an export folder (``fitnets export``'s
    ``model.safetensors`` + ``config.json`` + ``preprocess.pt``): the model in eval mode on
    the CPU, and the ``Preprocess`` to apply to raw images (0-255 floats, N x C x H x W)
    before it, or None when the run had none. ``model(pre(x))`` is the student's output."""
    folder = Path(folder)
    missing = [n for n in ("config.json", "model.safetensors") if not (folder / n).is_file()]
    if missing:
        raise FitnetsError(f"'{folder}' is not a fitnets export folder: it lacks "
                           f"{', '.join(missing)} (write one with fitnets export RUN_DIR "
                           "--formats safetensors).")
    config = json.loads((folder / "config.json").read_text())
    model = build_described({**config, "model": config["architecture"]})
    model.load_state_dict(load_safetensors(folder / "model.safetensors"))
    pre_file = folder / "preprocess.pt"
    pre = Preprocess.from_state_dict(load_weights(pre_file)) if pre_file.is_file() else None
    return model.eval(), pre


def _diff(a: torch.Tensor, b: Any) -> float:
    return float((a - torch.as_tensor(b)).abs().max())


def _safetensors(model: nn.Module, bundle: dict, shape: tuple, check: torch.Tensor,
                 ref: torch.Tensor, out: Path) -> dict:
    from safetensors.torch import load_file, save_file

    path = out / "model.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"format": "pt"})
    pre = bundle.get("preprocess", {})
    config = {"architecture": bundle["model"], "num_classes": int(bundle["num_classes"]),
              "input_shape": list(shape), "batchnorm": bool(bundle.get("batchnorm", False)),
              "maxout": bundle.get("maxout"),
              "preprocess": {k: (v.tolist() if isinstance(v, torch.Tensor) else v)
                             for k, v in pre.items()}, "library": "fitnets"}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    twin = build_described(bundle)  # a fresh network as described, weights from the file
    twin.load_state_dict(load_file(str(path)))
    with torch.no_grad():
        diff = _diff(ref, twin.eval()(check))
    return {"path": path.name, "config": "config.json", "max_abs_diff": diff,
            "what": "weights (safetensors, no pickle) + config.json; fitnets loads the folder "
                    "as teacher.weights"}


def _torch_export(model: nn.Module, x: torch.Tensor, check: torch.Tensor, ref: torch.Tensor,
                  out: Path) -> dict:
    path = out / "student.pt2"
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    except Exception as e:  # a model torch.export cannot capture: say so, keep the others
        return {"path": None, "max_abs_diff": None,
                "what": f"not exported: torch.export failed ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]})"}
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    with torch.no_grad():
        diff = _diff(ref, loaded(check))
    return {"path": path.name, "what": "torch.export program (ExportedProgram), dynamic batch",
            "max_abs_diff": diff}


def _torchscript(model: nn.Module, x: torch.Tensor, check: torch.Tensor, ref: torch.Tensor,
                 out: Path) -> dict:
    path = out / "student.torchscript.pt"
    # torch.jit is deprecated upstream but still the one format C++ / mobile runtimes load
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # maxout's "channels % pieces" check is traced as a constant: right for a fixed
        # architecture, and the file is checked on another batch size below
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, x)
        traced.save(str(path))
        loaded = torch.jit.load(str(path))
    with torch.no_grad():
        diff = _diff(ref, loaded(check))
    return {"path": path.name, "what": "torch.jit.trace of the student (eval mode)",
            "max_abs_diff": diff}


def _onnx(model: nn.Module, x: torch.Tensor, check: torch.Tensor, ref: torch.Tensor,
          out: Path) -> dict:
    path = out / "student.onnx"
    # the current exporter (torch.export based, dynamo=True) needs onnxscript; without it,
    # the TorchScript-based one, which needs only onnx
    dynamo = importlib.util.find_spec("onnxscript") is not None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecations
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=4096)
            torch.onnx.export(model, (x,), str(path), dynamo=True, dynamic_shapes=({0: batch},),
                              input_names=["input"], output_names=["logits"])
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["input"],
                              output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    entry: dict[str, Any] = {"path": path.name, "what": "ONNX, dynamic batch axis",
                             "exporter": "torch.export (dynamo)" if dynamo else
                             "TorchScript-based (pip install onnxscript for the current one)",
                             "max_abs_diff": None}
    if importlib.util.find_spec("onnxruntime") is None:
        entry["check"] = "skipped: onnxruntime is not installed (pip install 'fitnets[onnx]')"
        return entry
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (result,) = session.run(None, {"input": check.numpy()})
    entry["max_abs_diff"] = _diff(ref, result)
    return entry
