"""Read the outputs of named layers of any nn.Module, and stop the forward pass early.

A tap is a forward hook on the module named e.g. ``"conv4"`` or ``"layer2.1.conv1"``. When
every requested layer has been seen, the hook raises ``_Stop`` so that the layers above
are never computed: stage 1 pays only for the network up to its hint/guided layers.
"""

from __future__ import annotations

import difflib
from contextlib import contextmanager

import torch
from torch import nn

from fitnets.errors import FitnetsError


class _Stop(Exception):
    """Raised inside a hook once all taps are filled; caught by ``run_to``."""


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; a clear error listing the names if there is none."""
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, 3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(names[:60]) + (" ..." if len(names) > 60 else "")
    raise FitnetsError(
        f"the model {type(model).__name__} has no layer named '{name}'.{hint} "
        f"Its layers are: {shown}. (`fitnets layers MODEL` lists them with output shapes.)"
    )


@contextmanager
def _hooks(model: nn.Module, names: list[str], store: dict, stop: bool):
    def make(name: str):
        def hook(_module, _inputs, output):
            store[name] = output
            if stop and all(n in store for n in names):
                raise _Stop

        return hook

    handles = [get_layer(model, n).register_forward_hook(make(n)) for n in names]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def run_to(model: nn.Module, x: torch.Tensor, names: list[str]) -> list[torch.Tensor]:
    """Outputs of the layers ``names`` for input ``x``, computing nothing above them."""
    store: dict[str, torch.Tensor] = {}
    with _hooks(model, names, store, stop=True):
        try:
            model(x)
        except _Stop:
            pass
    missing = [n for n in names if n not in store]
    if missing:
        raise FitnetsError(
            f"layer(s) {missing} of {type(model).__name__} were not reached by its forward pass "
            "(they exist but are not called); choose layers that forward() runs."
        )
    return [_as_tensor(store[n], n) for n in names]


def run_with(model: nn.Module, x: torch.Tensor, names: list[str]) -> tuple[torch.Tensor, list]:
    """The model's full output plus the outputs of the layers ``names``."""
    store: dict[str, torch.Tensor] = {}
    with _hooks(model, names, store, stop=False):
        out = model(x)
    return out, [_as_tensor(store[n], n) for n in names]


def _as_tensor(value, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    raise FitnetsError(
        f"layer '{name}' returns {type(value).__name__}, not a tensor; pick a layer whose "
        "output is a single tensor (e.g. a block rather than a module returning a tuple)."
    )


def layer_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple]:
    """Output shape (without the batch) of every named submodule for one dummy input, in the
    order the forward pass produced them (a module called twice keeps its first shape)."""
    shapes: dict[str, tuple] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(_m, _i, out, name=name):
            if isinstance(out, torch.Tensor):
                shapes.setdefault(name, tuple(out.shape[1:]))

        handles.append(module.register_forward_hook(hook))
    modes = [m.training for m in model.modules()]  # restored one by one: they may differ
    try:
        model.eval()
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    except RuntimeError as e:  # e.g. an input smaller than a kernel
        raise FitnetsError(
            f"{type(model).__name__} cannot run on inputs of shape {tuple(input_shape)}: "
            f"{str(e).splitlines()[0][:300].rstrip('.')}. Give the input shape the model is "
            "built for."
        ) from None
    finally:
        for m, mode in zip(model.modules(), modes):
            m.training = mode
        for h in handles:
            h.remove()
    return shapes  # in the order the outputs appeared
