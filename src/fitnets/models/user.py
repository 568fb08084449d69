"""Models from the user's own code: ``package.module:function`` or ``path/to/file.py:function``.

The function is called with the keyword arguments it accepts among ``num_classes`` and
``in_channels`` and must return an ``nn.Module``. Nothing else about the model is assumed:
hint and guided layers are chosen by module name as for the built-in nets, and a model
without ``input_shape`` is fine (callers fall back to the dataset's shape).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

from torch import nn

from fitnets.checkpoint import load_into
from fitnets.errors import FitnetsError


def user_model(spec: str, num_classes: int = 10, in_channels: int | None = None) -> nn.Module:
    """The module a user's ``package.module:function`` or ``file.py:function`` builds."""
    where, _, fn_name = spec.rpartition(":")  # rpartition keeps a Windows drive letter whole
    if not where or not fn_name:
        raise FitnetsError(
            f"model '{spec}' should be 'package.module:function' or 'path/to/file.py:function'."
        )
    module = _load_file(where, spec) if _is_path(where) else _import(where, spec)
    fn = getattr(module, fn_name, None)
    if fn is None or not callable(fn):
        found = sorted(n for n, v in vars(module).items()
                       if callable(v) and not n.startswith("_") and not inspect.ismodule(v)
                       and getattr(v, "__module__", None) == module.__name__)
        raise FitnetsError(
            f"'{where}' has no function '{fn_name}' (from model '{spec}'). Callables defined "
            f"there: {', '.join(found) or 'none'}."
        )
    try:
        model = fn(**_kwargs_for(fn, num_classes=num_classes, in_channels=in_channels))
    except TypeError as e:
        if e.__traceback__ is not None and e.__traceback__.tb_next is not None:
            raise  # raised inside the builder: a bug there, keep its traceback
        raise FitnetsError(
            f"'{spec}' cannot be called as a model builder: {e}. It must take num_classes "
            "(and optionally in_channels) and return a torch.nn.Module."
        ) from None
    if not isinstance(model, nn.Module):
        raise FitnetsError(
            f"'{spec}' returned {type(model).__name__}, not a torch.nn.Module; the function "
            "must build and return the network."
        )
    return model


def model_file(spec: str) -> tuple[Path, str] | None:
    """The source file and function name of a ``path/to/file.py:function`` spec (the path as
    given: relative ones are relative to the current directory); None for any other spec (a
    built-in name, ``package.module:function``, ``timm:``/``torchvision:``/``hf:``)."""
    where, _, fn_name = str(spec).rpartition(":")
    if not where or not fn_name or not _is_path(where):
        return None
    return Path(where).expanduser(), fn_name


def _is_path(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def _load_file(where: str, spec: str) -> ModuleType:
    path = Path(where).expanduser()
    if not path.is_file():
        raise FitnetsError(f"model file '{path}' (from model '{spec}') does not exist.")
    name = f"fitnets_user_{path.stem}_{abs(hash(str(path.resolve())))}"
    mod_spec = importlib.util.spec_from_file_location(name, path)
    if mod_spec is None or mod_spec.loader is None:
        raise FitnetsError(f"cannot load '{path}' as Python source (from model '{spec}').")
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        mod_spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise FitnetsError(
            f"running model file '{path}' failed: {type(e).__name__}: {e}"
        ) from e
    return module


def _import(where: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as e:
        raise FitnetsError(
            f"cannot import module '{where}' (from model '{spec}'): {e}. Is it installed or on "
            "PYTHONPATH? For a file, give its path: 'path/to/file.py:function'."
        ) from None
    except Exception as e:
        raise FitnetsError(
            f"importing module '{where}' failed: {type(e).__name__}: {e}"
        ) from e


def _kwargs_for(fn, **offered) -> dict:
    """The offered keyword arguments (None ones dropped) that ``fn``'s signature accepts."""
    offered = {k: v for k, v in offered.items() if v is not None}
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins / C callables: pass nothing
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return offered
    ok = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {k: v for k, v in offered.items() if k in params and params[k].kind in ok}


def load_state(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a run directory's ``model.pt`` or a state-dict file into ``model`` (weights-only),
    with the same checks as a run's teacher loading; returns the model."""
    try:
        load_into(model, path, type(model).__name__)
    except RuntimeError as e:  # load_state_dict raises on shape mismatches even when not strict
        raise FitnetsError(
            f"the weights in '{path}' do not fit model {type(model).__name__}: "
            f"{' '.join(str(e).split())[:500]}"
        ) from None
    return model
