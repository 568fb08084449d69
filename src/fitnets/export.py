"""Export a finished run's student; then check every file against the PyTorch model.

Formats: ``safetensors`` (``model.safetensors`` + ``config.json``, the layout timm and
Hugging Face use; no pickle), ``state_dict`` (a plain ``torch.save``), ``torch_export``
(a ``torch.export`` program, ``.pt2``, dynamic batch), ``torchscript`` and ``onnx``.

Reads ``RUN/model.pt`` (weights-only), rebuilds the network by name, loads the weights and
writes the files into ``RUN/export`` (or ``out_dir``). The check runs one random batch
through the PyTorch model and through each exported file and records the largest absolute
difference; a difference above ``TOLERANCE`` is an error, not a warning, since a silently
different exported model is worse than none.

An export stands alone:

- a model from the user's own file (``path/to/file.py:function``) travels with it: the
  file is copied into ``code/`` and recorded in ``export.json`` (``files.model_code``), and
  ``load_exported`` builds from that copy, so the folder loads from any directory after
  the original file has moved. Only that one file is copied: a model file that imports its
  own helper modules still needs them; if building from the copy fails, ``load_exported``
  falls back to ``student.pt2`` (the torch.export program, which holds no Python code)
  with a warning. Built-in nets and ``package.module:function`` are rebuilt by name.
- the folder is written whole or not at all: everything goes into a hidden sibling
  (``.NAME.partial-PID-XXXX``) that is renamed into place once complete (an existing
  export is swapped out atomically where the OS can, else moved aside just before), so a
  kill leaves the previous complete export or none, never half of one. ``export.json`` is
  written last and lists every file with its size and SHA-256; ``load_exported`` refuses
  a folder without it, or whose files are missing or differ.
- every file has the mode a new file gets under the umask (0644 under umask 022), and is
  fsynced before the rename.

An export whose check fails is not installed: it is left in ``NAME.rejected`` for
inspection, with the disagreement in its ``export.json``, and the previous export stays.

A language-model run (``data.name=text``: its model.pt records a tokenizer) exports the
same files, traced and checked on int64 token ids (batch, sequence) with a dynamic batch
*and* sequence axis (up to the context, data.block_size; the check uses a shorter sequence
than the trace). ``config.json`` then holds all a rebuild needs: the architecture and its
sizes (width, depth, heads, context), the vocabulary and the tokenizer: ``byte`` is
described, a Hugging Face tokenizer folder is copied into ``tokenizer/``, so
``load_exported`` and ``load_exported_tokenizer`` (and ``fitnets generate EXPORT_DIR``)
need neither the run directory nor the original tokenizer folder. A Hugging Face student
(``hf:``) also gets its ``save_pretrained`` folder, ``hf/`` (with the tokenizer's files), which
``transformers``' Auto classes load without fitnets; ``load_exported`` builds from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import secrets
import shutil
import stat
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fitnets import faults
from fitnets.checkpoint import _fsync_dir, load_safetensors, load_weights, save_weights
from fitnets.data.preprocess import Preprocess
from fitnets.errors import FitnetsError
from fitnets.models import MODELS, build_described, load_run_model
from fitnets.models.ecosystem import is_ecosystem
from fitnets.models.user import model_file

FORMATS = ("safetensors", "state_dict", "torch_export", "torchscript", "onnx")
TOLERANCE = 1e-4
ONNX_MISSING = "skipped: onnx is not installed (pip install 'fitnets[onnx]')"
CODE_DIR = "code"
# what export writes at the top of its folder (student.* covers ONNX external data); a
# folder holding anything else is not replaced
TOKENIZER_DIR, HF_DIR = "tokenizer", "hf"  # a language model's tokenizer; an hf: student's folder
_OURS = {"export.json", "config.json", "model.safetensors", "preprocess.pt", CODE_DIR,
         TOKENIZER_DIR, HF_DIR}


def export_run(
    run_dir: str | Path, out_dir: str | Path | None = None, formats: tuple = FORMATS
) -> dict[str, Any]:
    """Export the student of ``run_dir``; returns (and writes as export.json) what was done.

    The folder appears complete or not at all (see the module's docstring)."""
    run_dir = Path(run_dir)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise FitnetsError(f"unknown export format(s) {unknown}; choose from {', '.join(FORMATS)}.")
    out = Path(out_dir) if out_dir is not None else run_dir / "export"
    if out.is_symlink():  # write where it points, keep the link
        out = out.resolve()
    model, bundle = load_run_model(run_dir)
    if is_language_model(bundle):
        _tokenizer_folder(bundle["tokenizer"], run_dir)  # gone: say so before writing
    rejected = out.with_name(out.name + ".rejected")
    for folder in (out, rejected):
        _refuse_foreign(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    tmp = _sibling(out, "partial")
    tmp.mkdir()  # the umask's mode, as any new folder (mkdtemp's would be 0700)
    try:
        info = _write(model, bundle, formats, tmp)
        _seal(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if info.get("disagree"):
        _install(tmp, rejected)
        kept = "the previous export is unchanged" if out.exists() else "no export was written"
        raise FitnetsError(f"exported model(s) disagree with PyTorch beyond {TOLERANCE}: "
                           f"{info['disagree']}; {kept} (the failed one is in '{rejected}', "
                           "see its export.json).")
    _install(tmp, out)
    return info


def is_language_model(bundle: dict) -> bool:
    """A run's model.pt (or an export's config.json) of a language model: it records the
    tokenizer of its token ids."""
    return bundle.get("tokenizer") is not None


def _tokenizer_folder(spec: str, run_dir: Path) -> Path | None:
    """A run's Hugging Face tokenizer folder (None: the byte tokenizer); gone: an error."""
    if spec == "byte":
        return None
    folder = Path(spec)
    if not folder.is_dir():
        raise FitnetsError(
            f"the tokenizer of '{run_dir}' was the Hugging Face folder '{spec}' (its model.pt "
            "records it), which is no longer there; the export copies it so that it stands "
            "alone: put the folder back and export again.")
    return folder


def _outputs(out: Any) -> torch.Tensor:
    return getattr(out, "logits", out)  # a Hugging Face output object, or the tensor


def _inputs(bundle: dict, shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """(the trace's input, the check's): images of batch 2, then 3 (the batch is dynamic);
    for a language model token ids, (2, context) then (3, a shorter sequence)."""
    gen = torch.Generator().manual_seed(0)
    if not is_language_model(bundle):
        return torch.randn(2, *shape, generator=gen), torch.randn(3, *shape, generator=gen)
    vocab, context = int(bundle["num_classes"]), shape[0]
    return (torch.randint(vocab, (2, context), generator=gen),
            torch.randint(vocab, (3, max(1, context // 2 + 1)), generator=gen))


def _write(model: nn.Module, bundle: dict, formats: tuple, out: Path) -> dict[str, Any]:
    """Every file of the export into ``out`` (the temporary folder), export.json last."""
    shape = tuple(int(s) for s in bundle["input_shape"])
    lm = is_language_model(bundle)
    x, check = _inputs(bundle, shape)
    with torch.no_grad():
        reference = _outputs(model(check))

    info: dict[str, Any] = {"model": bundle["model"], "num_classes": int(bundle["num_classes"]),
                            "input_shape": list(shape), "files": {}, "skipped": {}}
    described = dict(bundle)  # how load_exported will rebuild it
    if lm:
        masked = bundle.get("objective") == "masked"  # a BERT-style masked LM's run
        info.update(task="masked-lm" if masked else "causal-lm",
                    vocab_size=int(bundle["num_classes"]),
                    context=shape[0], tokenizer=_copy_tokenizer(bundle["tokenizer"], out))
        if info["tokenizer"].get("path"):
            info["files"]["tokenizer"] = {"path": info["tokenizer"]["path"],
                                          "what": "the run's Hugging Face tokenizer, copied"}
        hf = _save_pretrained(model, info["tokenizer"], out)
        if hf is not None:
            info["files"]["hf"] = hf
            described["model"] = f"hf:{out / HF_DIR}"  # rebuilt from the export's own folder
        _written()
    if "preprocess" in bundle and not lm:  # token ids: nothing to apply before the model
        save_weights(bundle["preprocess"], out / "preprocess.pt")
        info["files"]["preprocess"] = {"path": "preprocess.pt",
                                       "what": "preprocessing state (apply before the model)"}
        _written()
    code = _copy_model_code(bundle["model"], out)
    if code is not None:
        info["files"]["model_code"] = code
        described["model"] = f"{out / code['path']}:{code['function']}"
        _written()
    if "safetensors" in formats:
        info["files"]["safetensors"] = _safetensors(model, bundle, described, shape, check,
                                                    reference, out, info.get("tokenizer"))
        _written()
    if "torch_export" in formats:
        info["files"]["torch_export"] = _torch_export(model, x, check, reference, out, lm)
        _written()
    if "state_dict" in formats:
        save_weights(model.state_dict(), out / "student_state_dict.pt")
        info["files"]["state_dict"] = {"path": "student_state_dict.pt",
                                       "what": "plain state dict of the student (no regressor)"}
        _written()
    if "torchscript" in formats:
        info["files"]["torchscript"] = _torchscript(model, x, check, reference, out)
        _written()
    if "onnx" in formats:
        if importlib.util.find_spec("onnx") is None:
            info["skipped"]["onnx"] = ONNX_MISSING
        else:
            info["files"]["onnx"] = _onnx(model, x, check, reference, out, lm)
            _written()
    bad = {k: v["max_abs_diff"] for k, v in info["files"].items()
           if v.get("max_abs_diff") is not None and v["max_abs_diff"] > TOLERANCE}
    if bad:
        info["disagree"] = bad
    info["manifest"] = {p.relative_to(out).as_posix(): {"bytes": p.stat().st_size,
                                                        "sha256": _sha256(p)}
                        for p in sorted(out.rglob("*")) if p.is_file()}
    (out / "export.json").write_text(json.dumps(info, indent=2) + "\n")
    _written()
    return info


def _written() -> None:
    """Test hook: FITNETS_TEST_KILL_AT=export-file:N stops after the N-th file is written."""
    if faults.ARMED:
        faults.reached("export-file")


def _copy_tokenizer(spec: str, out: Path) -> dict:
    """How a language model's ids are made: ``byte`` described, a Hugging Face tokenizer
    folder copied into ``out/tokenizer`` (its files, as the run read them)."""
    from fitnets.data.text import ByteTokenizer, make_tokenizer

    if spec == "byte":
        tok = ByteTokenizer()
        return {"kind": "byte", "vocab_size": tok.vocab_size, "eod": tok.eod}
    tok = make_tokenizer(spec)
    (out / TOKENIZER_DIR).mkdir()
    for f in tok.files():
        shutil.copyfile(f, out / TOKENIZER_DIR / f.name)
    return {"kind": "hf", "path": TOKENIZER_DIR, "from": str(spec),
            "vocab_size": tok.vocab_size, "eod": tok.eod}


def _save_pretrained(model: nn.Module, tokenizer: dict, out: Path) -> dict | None:
    """A Hugging Face student's ``save_pretrained`` folder (``out/hf``), with the tokenizer's
    files, so transformers' Auto classes load it without fitnets; None for other models."""
    hf = next((m for m in model.modules() if callable(getattr(m, "save_pretrained", None))),
              None)
    if hf is None:
        return None
    hf.save_pretrained(str(out / HF_DIR), safe_serialization=True)
    if tokenizer.get("path"):
        for f in sorted((out / tokenizer["path"]).iterdir()):
            if not (out / HF_DIR / f.name).exists():
                shutil.copyfile(f, out / HF_DIR / f.name)
    try:  # the class transformers will build (the object may be a wrapper that delegates)
        cls = json.loads((out / HF_DIR / "config.json").read_text())["architectures"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        cls = type(hf).__name__
    return {"path": HF_DIR, "class": cls,
            "what": "Hugging Face save_pretrained folder (+ tokenizer files): "
                    "AutoModelForCausalLM / AutoTokenizer .from_pretrained load it"}


def _copy_model_code(spec: str, out: Path) -> dict | None:
    """Copy the source of a ``file.py:function`` model into ``out/code``; None for others."""
    if spec in MODELS or is_ecosystem(spec):
        return None
    found = model_file(spec)
    if found is None:
        return None
    src, fn_name = found
    (out / CODE_DIR).mkdir()
    dest = out / CODE_DIR / src.name
    shutil.copyfile(src, dest)  # contents only: the new file gets the umask's mode
    return {"path": dest.relative_to(out).as_posix(), "function": fn_name,
            "from": str(src.resolve()),
            "what": f"source of the model '{spec}', copied; load_exported builds from it"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sibling(out: Path, kind: str) -> Path:
    return out.with_name(f".{out.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def _refuse_foreign(folder: Path) -> None:
    """An existing ``folder`` is replaced whole, so it must hold an export's files only."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise FitnetsError(f"cannot export to '{folder}': it is a file, not a folder.")
    foreign = sorted(p.name for p in folder.iterdir()
                     if p.name not in _OURS and not p.name.startswith("student"))
    if foreign:
        raise FitnetsError(
            f"cannot export to '{folder}': it holds files that fitnets export did not write "
            f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}), and export "
            "replaces the whole folder. Choose another --out, or move those files away."
        )


def _remove_stale(out: Path) -> None:
    """Remove what killed exports into ``out`` left beside it (their process is gone)."""
    for kind in ("partial", "old"):
        for p in out.parent.glob(f".{out.name}.{kind}-*"):
            pid = p.name[len(f".{out.name}.{kind}-"):].split("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # someone else's process, or not a POSIX pid
        return True
    return True


def _seal(folder: Path) -> None:
    """Give every file the mode a new file gets here (the umask's: safetensors writes 0600
    through a temporary file of its own), and fsync files and folders before the rename."""
    probe = folder / ".mode"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    mode = stat.S_IMODE(probe.stat().st_mode)
    probe.unlink()
    for p in sorted(folder.rglob("*"), reverse=True):  # files before their folder
        if p.is_file():
            os.chmod(p, mode)
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        else:
            _fsync_dir(p)
    _fsync_dir(folder)


def _install(tmp: Path, out: Path) -> None:
    """Rename the complete ``tmp`` to ``out``, replacing an existing ``out`` at the end."""
    if out.exists():
        if _exchange(tmp, out):  # atomic: readers see the old export or the new one
            _installing()
            shutil.rmtree(tmp, ignore_errors=True)  # now the old export
        else:
            old = _sibling(out, "old")
            os.rename(out, old)
            _installing()  # a kill here leaves no export (and the old one beside it)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)
        _installing()
    _fsync_dir(out.parent)


def _installing() -> None:
    """Test hook: FITNETS_TEST_KILL_AT=export-install:1 stops as the folder is put in place."""
    if faults.ARMED:
        faults.reached("export-install")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        import ctypes

        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError, TypeError):  # not glibc >= 2.28 / not Linux
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def load_exported(folder: str | Path) -> tuple[nn.Module, Preprocess | None]:
    """The network and preprocessing of an export folder (``fitnets export``'s
    ``model.safetensors`` + ``config.json`` + ``preprocess.pt``): the model in eval mode on
    the CPU, and the ``Preprocess`` to apply to raw images (0-255 floats, N x C x H x W)
    before it, or None when the run had none. ``model(pre(x))`` is the student's output.

    Works from any directory: a model from the user's own file is built from the copy in
    the folder's ``code/``. If that build fails (say the file imports a helper module that
    is not there) and the folder has ``student.pt2``, that torch.export program is returned
    instead, with a warning (it runs the same computation, but it is an exported graph:
    no ``.eval()``/``.train()``, no training). An incomplete folder (a killed export: no
    export.json, or files missing or changed) is refused with the reason.

    Loading the export of a model from your own file runs that file's copy, as importing
    it would: load such exports only from sources you would take code from."""
    folder = Path(folder)
    info = _complete_export(folder)
    if "safetensors" not in info["files"]:
        raise FitnetsError(f"'{folder}' was exported without safetensors, which load_exported "
                           "reads (it lacks model.safetensors, config.json): re-run fitnets "
                           "export RUN_DIR --formats safetensors (plus any others).")
    config = json.loads((folder / "config.json").read_text())
    description = {**config, "model": config["architecture"]}
    if config.get("hf"):  # a Hugging Face student: its save_pretrained folder in the export
        description["model"] = f"hf:{folder.resolve() / config['hf']}"
    code = info["files"].get("model_code")
    if code is not None:  # the copy, wherever the folder and the current directory are
        source = (folder / code["path"]).resolve()
        if not source.is_relative_to(folder.resolve()):
            raise FitnetsError(f"'{folder / 'export.json'}' names model code outside the "
                               f"folder ({code['path']}); refused.")
        description["model"] = f"{source}:{code['function']}"
    pre_file = folder / "preprocess.pt"
    pre = Preprocess.from_state_dict(load_weights(pre_file)) if pre_file.is_file() else None
    try:
        model = build_described(description)
    except FitnetsError as e:
        program = (info["files"].get("torch_export") or {}).get("path")
        carried = (f" (the export carries the model's own file, {code['path']}, not modules "
                   "it imports)") if code is not None else ""
        if not program:
            raise FitnetsError(f"cannot rebuild the network of '{folder}': {e}{carried}. Make "
                               "what it needs importable, or re-export with the torch_export "
                               "format (a program that needs no Python source).") from None
        warnings.warn(f"cannot rebuild the network of '{folder}' from source ({e}){carried}; "
                      f"loaded its torch.export program {program} instead (no .eval()/.train(): "
                      "it was exported in eval mode).", stacklevel=2)
        return torch.export.load(str(folder / program)).module(), pre
    model.load_state_dict(load_safetensors(folder / "model.safetensors"))
    return model.eval(), pre


def load_exported_tokenizer(folder: str | Path):
    """The tokenizer of a language model's export folder (``ByteTokenizer``, or an
    ``HFTokenizer`` read from the folder's own copy, ``tokenizer/``): ``encode`` text to the
    ids the model takes, ``decode`` its ids back. An image classifier's export is refused."""
    from fitnets.data.text import ByteTokenizer, HFTokenizer

    folder = Path(folder)
    info = _complete_export(folder)
    config = json.loads((folder / "config.json").read_text()) if (
        folder / "config.json").is_file() else {}
    tok = config.get("tokenizer") or info.get("tokenizer")
    if not tok:
        shape = "x".join(str(s) for s in info.get("input_shape", []))
        raise FitnetsError(
            f"'{folder}' is the export of an image classifier ({info.get('model', '?')}, "
            f"{info.get('num_classes', '?')} classes, input {shape}): it has no tokenizer. "
            "A language model's export (fitnets export of a data.name=text run) has one.")
    if tok["kind"] == "byte":
        return ByteTokenizer()
    return HFTokenizer(str(folder / tok["path"]))


def _complete_export(folder: Path) -> dict[str, Any]:
    """export.json of a complete export folder; the reason as a FitnetsError otherwise."""
    run = folder.parent
    redo = (f"re-run `fitnets export {run}`" if folder.name == "export"
            and (run / "model.pt").is_file() else
            f"re-run `fitnets export RUN_DIR --out {folder}` on the run it came from")
    if not folder.is_dir():
        raise FitnetsError(f"export folder '{folder}' does not exist (write one with "
                           "fitnets export RUN_DIR).")
    try:
        info = json.loads((folder / "export.json").read_text())
    except FileNotFoundError:
        raise FitnetsError(
            f"'{folder}' is not a complete fitnets export: it has no export.json, which export "
            f"writes last (an export that was killed, or a folder written by something else): "
            f"{redo}.") from None
    except (OSError, ValueError) as e:
        raise FitnetsError(f"'{folder}' has an unreadable export.json ({e}): {redo}.") from None
    if not isinstance(info, dict) or not isinstance(info.get("files"), dict):
        raise FitnetsError(f"'{folder / 'export.json'}' is not a fitnets export record: {redo}.")
    if info.get("disagree"):
        raise FitnetsError(f"'{folder}' is an export that failed its check (it disagrees with "
                           f"PyTorch: {info['disagree']}), kept only for inspection.")
    manifest = info.get("manifest")
    if manifest is None:  # written before manifests: the files export.json names
        manifest = {e[k]: None for e in info["files"].values() for k in ("path", "config")
                    if isinstance(e, dict) and e.get(k)}
    missing = [name for name in manifest if not (folder / name).is_file()]
    if missing:
        raise FitnetsError(f"'{folder}' is incomplete: it lacks {', '.join(missing)} (named in "
                           f"its export.json): {redo}.")
    # sizes of all; contents of the files load_exported reads (hashing the other formats'
    # copies of the weights too would multiply the load time)
    read = {"config.json", "model.safetensors", "preprocess.pt",
            (info["files"].get("model_code") or {}).get("path")}
    changed = [name for name, rec in manifest.items()
               if rec is not None and ((folder / name).stat().st_size != rec["bytes"] or (
                   name in read and _sha256(folder / name) != rec["sha256"]))]
    if changed:
        raise FitnetsError(f"'{folder}' is damaged: {', '.join(changed)} changed since the "
                           f"export (size or SHA-256 differs from export.json): {redo}.")
    return info


def _diff(a: torch.Tensor, b: Any) -> float:
    return float((a - torch.as_tensor(b)).abs().max())


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict for safetensors, which refuses tensors sharing memory: a tied weight
    (the GPT's output layer is its token embedding) is written once per name, copied."""
    seen, out = set(), {}
    for k, v in model.state_dict().items():
        v = v.detach().contiguous()
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), v.numel())
        out[k] = v.clone() if v.numel() and key in seen else v
        seen.add(key)
    return out


def _safetensors(model: nn.Module, bundle: dict, described: dict, shape: tuple,
                 check: torch.Tensor, ref: torch.Tensor, out: Path,
                 tokenizer: dict | None = None) -> dict:
    from safetensors.torch import load_file, save_file

    path = out / "model.safetensors"
    save_file(_tensors(model), str(path), metadata={"format": "pt"})
    if tokenizer is not None:  # a language model: everything to rebuild it and its ids
        config = {"architecture": bundle["model"], "task": "causal-lm",
                  "num_classes": int(bundle["num_classes"]),
                  "vocab_size": int(bundle["num_classes"]), "input_shape": list(shape),
                  "context": int(shape[0]), "sizes": bundle.get("sizes"),
                  "tokenizer": tokenizer, "input": "int64 token ids (batch, sequence <= "
                  "context)", "output": "next-token logits (batch, sequence, vocab_size)",
                  "library": "fitnets"}
        if described["model"] != bundle["model"]:  # an hf: student, from the export's hf/
            config["hf"] = HF_DIR
    else:
        pre = bundle.get("preprocess", {})
        config = {"architecture": bundle["model"], "num_classes": int(bundle["num_classes"]),
                  "input_shape": list(shape), "batchnorm": bool(bundle.get("batchnorm", False)),
                  "maxout": bundle.get("maxout"),
                  "preprocess": {k: (v.tolist() if isinstance(v, torch.Tensor) else v)
                                 for k, v in pre.items()}, "library": "fitnets"}
        if described["model"] != bundle["model"]:  # built from the copied source
            config["model_code"] = Path(described["model"]).relative_to(out).as_posix()
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    twin = build_described(described)  # a fresh network as load_exported builds it
    twin.load_state_dict(load_file(str(path)))
    with torch.no_grad():
        diff = _diff(ref, _outputs(twin.eval()(check)))
    return {"path": path.name, "config": "config.json", "max_abs_diff": diff,
            "what": "weights (safetensors, no pickle) + config.json; fitnets loads the folder "
                    "as teacher.weights"}


def _dynamic(x: torch.Tensor, lm: bool) -> dict:
    """torch.export's dynamic axes: the batch; a language model's sequence too (at most its
    context, the length it was traced with)."""
    axes = {0: torch.export.Dim("batch", min=1, max=4096)}
    if lm:
        axes[1] = torch.export.Dim("sequence", min=1, max=int(x.shape[1]))
    return axes


def _torch_export(model: nn.Module, x: torch.Tensor, check: torch.Tensor, ref: torch.Tensor,
                  out: Path, lm: bool = False) -> dict:
    path = out / "student.pt2"
    try:
        program = torch.export.export(model, (x,), dynamic_shapes=(_dynamic(x, lm),))
    except Exception as e:  # a model torch.export cannot capture: say so, keep the others
        return {"path": None, "max_abs_diff": None,
                "what": f"not exported: torch.export failed ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]})"}
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    with torch.no_grad():
        diff = _diff(ref, _outputs(loaded(check)))
    return {"path": path.name, "what": "torch.export program (ExportedProgram), dynamic batch"
            + (" and sequence" if lm else ""), "max_abs_diff": diff}


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
        diff = _diff(ref, _outputs(loaded(check)))
    return {"path": path.name, "what": "torch.jit.trace of the student (eval mode)",
            "max_abs_diff": diff}


def _onnx(model: nn.Module, x: torch.Tensor, check: torch.Tensor, ref: torch.Tensor,
          out: Path, lm: bool = False) -> dict:
    path = out / "student.onnx"
    name = "input_ids" if lm else "input"  # a language model takes token ids (int64)
    axes = {0: "batch", 1: "sequence"} if lm else {0: "batch"}
    # the current exporter (torch.export based, dynamo=True) needs onnxscript; without it,
    # the TorchScript-based one, which needs only onnx
    dynamo = importlib.util.find_spec("onnxscript") is not None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecations
        if dynamo:
            torch.onnx.export(model, (x,), str(path), dynamo=True,
                              dynamic_shapes=(_dynamic(x, lm),), input_names=[name],
                              output_names=["logits"])
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=[name],
                              output_names=["logits"],
                              dynamic_axes={name: axes, "logits": axes})
    entry: dict[str, Any] = {"path": path.name, "input": name,
                             "what": ("ONNX, int64 token ids in, dynamic batch and sequence "
                                      "axes" if lm else "ONNX, dynamic batch axis"),
                             "exporter": "torch.export (dynamo)" if dynamo else
                             "TorchScript-based (pip install onnxscript for the current one)",
                             "max_abs_diff": None}
    if importlib.util.find_spec("onnxruntime") is None:
        entry["check"] = "skipped: onnxruntime is not installed (pip install 'fitnets[onnx]')"
        return entry
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (result,) = session.run(None, {name: check.numpy()})
    entry["max_abs_diff"] = _diff(ref, result)
    return entry
