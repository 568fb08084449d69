"""Read the outputs of named layers of any nn.Module, and stop the forward pass early.

A tap is a forward hook on the module named e.g. ``"conv4"`` or ``"layer2.1.conv1"``. When
every requested layer has been seen, the hook raises ``_Stop`` so that the layers above
are never computed: stage 1 pays only for the network up to its hint/guided layers.

A layer whose output is a tuple, list, dict or a Hugging Face ``ModelOutput`` is tapped by
an index or a key after its name: ``encoder.layer.3[0]`` (element 0),
``vit:last_hidden_state`` (key), chained as needed (``block[1]:hidden``).

Under ``perf.compile`` (``compile_taps(model)``) a model's taps are instead read by a
:class:`Reader`: hooks registered once, gated by a flag, that keep outputs without stopping
the forward pass (an exception raised in a hook cannot be compiled). The compiled stage
module then holds the whole forward, and the compiler drops the layers above the deepest
tap, whose outputs nothing uses; Dynamo is told to guard on hooks, so a reader added after a
model was first compiled recompiles it rather than being skipped.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from contextlib import contextmanager

import torch
from torch import nn

from fitnets.errors import FitnetsError
from fitnets.models.counting import dummy_input


class _Stop(Exception):
    """Raised inside a hook once all taps are filled; caught by ``run_to``."""


_SELECTOR = re.compile(r"\[(-?\d+)\]|:([A-Za-z_][A-Za-z0-9_]*)")


_PARSED: dict[str, tuple[str, list[int | str]]] = {}


def parse_tap(spec: str) -> tuple[str, list[int | str]]:
    """``"encoder.layer.3[0]:x"`` -> ("encoder.layer.3", [0, "x"]).

    Parsed once per spec: a compiled forward (perf.compile) then reads a dict instead of
    running a regex, which torch.compile cannot trace (a graph break on every call)."""
    if spec not in _PARSED:
        _PARSED[spec] = _parse(spec)
    return _PARSED[spec]


def _parse(spec: str) -> tuple[str, list[int | str]]:
    found = [i for i in (spec.find("["), spec.find(":")) if i >= 0]
    cut = min(found) if found else len(spec)
    name, rest = spec[:cut], spec[cut:]
    selectors: list[int | str] = []
    pos = 0
    for m in _SELECTOR.finditer(rest):
        if m.start() != pos:
            break
        selectors.append(int(m.group(1)) if m.group(1) is not None else m.group(2))
        pos = m.end()
    if pos != len(rest):
        raise FitnetsError(f"cannot read the layer '{spec}': after the module name give "
                           "[INDEX] for an element of a tuple/list output or :KEY for a "
                           "dict/ModelOutput field, e.g. 'encoder.layer.3[0]' or "
                           "'vit:last_hidden_state'.")
    return name, selectors


def select(value, selectors: list[int | str], spec: str):
    """The element of a layer's output that ``selectors`` name."""
    for sel in selectors:
        try:
            if isinstance(sel, int):
                value = value[sel]
            elif isinstance(value, Mapping):
                value = value[sel]
            else:
                value = getattr(value, sel)
        except (IndexError, KeyError, AttributeError, TypeError):
            raise FitnetsError(f"layer '{spec}': its output ({describe_output(value)}) has no "
                               f"{'element' if isinstance(sel, int) else 'field'} {sel!r}."
                               ) from None
    return value


def describe_output(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor {tuple(value.shape)}"
    if isinstance(value, Mapping):
        return (f"{type(value).__name__} with keys "
                f"{', '.join(repr(k) for k in value.keys())}")
    if isinstance(value, (tuple, list)):
        inner = ", ".join(describe_output(v) if isinstance(v, torch.Tensor)
                          else type(v).__name__ for v in value)
        return f"{type(value).__name__} of {len(value)}: ({inner})"
    return type(value).__name__


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (a tap's selectors are ignored); a clear error listing
    the names if there is none."""
    name = parse_tap(name)[0]
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
        selectors = parse_tap(name)[1]

        def hook(_module, _inputs, output):
            store[name] = select(output, selectors, name)
            if stop and all(n in store for n in names):
                raise _Stop

        return hook

    handles = [get_layer(model, n).register_forward_hook(make(n)) for n in names]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _check_reached(model: nn.Module, names: list[str], store: dict) -> None:
    missing = [n for n in names if n not in store]
    if missing:
        raise FitnetsError(
            f"layer(s) {missing} of {type(model).__name__} were not reached by its forward pass "
            "(they exist but are not called); choose layers that forward() runs."
        )


class Reader:
    """Forward hooks on the layers ``names`` of ``model``, registered once, that keep the
    layers' outputs while ``on`` (a compiled caller traces them as plain code)."""

    def __init__(self, model: nn.Module, names: list[str]):
        self.model, self.names, self.on = model, list(names), False
        self.store: dict[str, torch.Tensor] = {}
        self._handles = [get_layer(model, n).register_forward_hook(self._hook(n))
                         for n in self.names]

    def _hook(self, name: str):
        selectors = parse_tap(name)[1]

        def hook(_module, _inputs, output):
            if self.on:
                self.store[name] = select(output, selectors, name) if selectors else output

        return hook

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        """The model's output and the tapped layers' outputs for ``x``."""
        self.on = True
        try:
            out = self.model(x)
        finally:
            self.on = False
        _check_reached(self.model, self.names, self.store)
        return out, [_as_tensor(self.store.pop(n), n) for n in self.names]


_READERS = "_fitnets_readers"  # a compiled model's readers, by their layer names


def compile_taps(model: nn.Module) -> None:
    """Read this model's taps with :class:`Reader`s from now on (perf.compile)."""
    import torch._dynamo

    torch._dynamo.config.skip_nnmodule_hook_guards = False  # a new reader recompiles
    # a model is called in a few contexts (train / eval, autocast, reader on / off, the last
    # partial batch): room for them, so that none silently falls back to eager
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 32)
    model.__dict__.setdefault(_READERS, {})


def prepare_taps(model: nn.Module, names: list[str]) -> None:
    """Register now the reader of ``names`` that a compiled step will use (under
    compile_taps; otherwise nothing): a hook registered while the compiler traces is a
    graph break, left in every later call."""
    _reader(model, names)


def _reader(model: nn.Module, names: list[str]) -> Reader | None:
    readers = model.__dict__.get(_READERS)
    if readers is None:
        return None
    key = tuple(names)
    if key not in readers:
        readers[key] = Reader(model, names)
    return readers[key]


def run_to(model: nn.Module, x: torch.Tensor, names: list[str]) -> list[torch.Tensor]:
    """Outputs of the layers ``names`` for input ``x``, computing nothing above them (under
    compile_taps: the whole forward, whose unused upper layers the compiler drops)."""
    reader = _reader(model, names)
    if reader is not None:
        return reader(x)[1]
    store: dict[str, torch.Tensor] = {}
    with _hooks(model, names, store, stop=True):
        try:
            model(x)
        except _Stop:
            pass
    _check_reached(model, names, store)
    return [_as_tensor(store[n], n) for n in names]


def run_with(model: nn.Module, x: torch.Tensor, names: list[str]) -> tuple[torch.Tensor, list]:
    """The model's full output plus the outputs of the layers ``names``."""
    reader = _reader(model, names)
    if reader is not None:
        return reader(x)
    store: dict[str, torch.Tensor] = {}
    with _hooks(model, names, store, stop=False):
        out = model(x)
    return out, [_as_tensor(store[n], n) for n in names]


def _as_tensor(value, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    how = ("an index, e.g. '{n}[0]'" if isinstance(value, (tuple, list))
           else "a key, e.g. '{n}:{k}'" if isinstance(value, Mapping) and len(value)
           else "an index or key after its name")
    first = next(iter(value.keys()), "") if isinstance(value, Mapping) else ""
    raise FitnetsError(
        f"layer '{name}' returns {describe_output(value)}, not a tensor; tap one of its "
        f"elements with {how.format(n=name, k=first)}, or pick a layer whose output is a "
        "single tensor."
    )


def _tensors_in(out, name: str, depth: int = 0):
    """(tap, tensor) for a layer's output: itself, or the tensors inside a tuple, list, dict
    or ModelOutput (one level deep), named as they are tapped."""
    if isinstance(out, torch.Tensor):
        yield name, out
    elif depth == 0 and isinstance(out, Mapping):
        for k, v in out.items():
            if isinstance(k, str) and isinstance(v, torch.Tensor):
                yield f"{name}:{k}", v
    elif depth == 0 and isinstance(out, (tuple, list)):
        for i, v in enumerate(out):
            if isinstance(v, torch.Tensor):
                yield f"{name}[{i}]", v


def layer_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple]:
    """Output shape (without the batch) of every named submodule for one dummy input, in the
    order the forward pass produced them (a module called twice keeps its first shape). A
    module returning a tuple/list/dict lists its tensors as taps (``name[0]``,
    ``name:key``)."""
    shapes: dict[str, tuple] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(_m, _i, out, name=name):
            for tap, value in _tensors_in(out, name):
                shapes.setdefault(tap, tuple(value.shape[1:]))

        handles.append(module.register_forward_hook(hook))
    modes = [m.training for m in model.modules()]  # restored one by one: they may differ
    try:
        model.eval()
        with torch.no_grad():
            model(dummy_input(model, input_shape))
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
