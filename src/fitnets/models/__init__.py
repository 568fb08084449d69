"""The paper's networks: maxout building blocks, builders, a registry and counting tools.

``MODELS`` is a plain dict (name -> builder); nothing registers itself on import.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fitnets.checkpoint import load_weights
from fitnets.errors import FitnetsError
from fitnets.models import bert, cifar, ecosystem, fast, gpt, paper, vit
from fitnets.models.blocks import ConvSpec, MaxoutConvBlock, MaxoutNet, MaxoutOptions
from fitnets.models.counting import (
    count_layers,
    count_mults,
    count_params,
    count_weights,
    format_profile,
    layer_table,
    profile,
)
from fitnets.models.maxout import (
    Maxout,
    MaxoutConv2d,
    MaxoutLinear,
    apply_max_norm_,
    paper_init_,
)
from fitnets.models.user import load_state, user_model

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mnist_teacher": paper.mnist_teacher,
    "mnist_student": paper.mnist_student,
    "digits_teacher": paper.digits_teacher,
    "digits_student": paper.digits_student,
    "cifar_teacher": paper.cifar_teacher,
    "fitnet1": paper.fitnet1,
    "fitnet2": paper.fitnet2,
    "fitnet3": paper.fitnet3,
    "fitnet4": paper.fitnet4,
    "svhn_teacher": paper.svhn_teacher,
    "svhn_fitnet": paper.svhn_fitnet,
    **cifar.MODELS,
    **fast.MODELS,
    **vit.MODELS,
    **gpt.MODELS,
    **bert.MODELS,
}


def data_init(model: nn.Module, data) -> None:
    """The one hook from data to a network's initialisation: a model with a method
    ``init_from_data(x)`` (e.g. cifar_fast_teacher's whitening layer) gets the first 5,000
    preprocessed training inputs (``data.probe``; CIFAR's order is already mixed). The run
    calls it on a freshly built student before training (a resumed run then loads its
    checkpoint over it); a network given from Python is the caller's to initialise."""
    init = getattr(model, "init_from_data", None)
    if callable(init):
        with torch.no_grad():
            init(data.probe(fast.DATA_INIT_IMAGES))


# config key (ModelConfig field) -> MaxoutOptions attribute
MAXOUT_KEYS = {"pool_rounding": "pool_rounding", "untied_biases": "untied_biases",
               "dropout_input": "input_dropout", "dropout_hidden": "hidden_dropout",
               "dropout_input_rescale": "input_dropout_rescale"}


def _shown(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def build_model(
    name: str, num_classes: int = 10, in_channels: int | None = None, batchnorm: bool = False,
    maxout: MaxoutOptions | None = None, pretrained: bool = False, key: str = "model",
    sizes: dict | None = None, task: str | None = None,
) -> nn.Module:
    """Build the registered model ``name``; ``in_channels=None`` keeps the model's default.

    ``timm:NAME``, ``torchvision:NAME`` and ``hf:DIR_OR_ID`` come from those libraries
    (``pretrained``: with the library's own weights; see models/ecosystem.py); any other
    name with a ':' is the user's own builder (``package.module:fn`` or ``file.py:fn``).
    ``maxout`` (pool rounding, untied biases, dropout) applies to the built-in maxout nets;
    anything but the defaults for another model is an error that names the config keys
    (``key``: the model's section, model / teacher / student). ``sizes`` (width, depth,
    heads, context; None values left out) go to the built-in models that take them (gpt);
    one set for a model that does not take it is an error naming the key. ``task`` (hf:
    models): "lm" on data.name=text (a causal LM, its context ``sizes["context"]``),
    "classify", or None: as the folder was saved (models/ecosystem.py).
    """
    sizes = {k: v for k, v in (sizes or {}).items() if v is not None}
    if maxout is not None and maxout != MaxoutOptions() and name not in MAXOUT_NETS:
        if name in MODELS or ":" in str(name):  # else: the unknown-name error below
            fields = [(f, getattr(maxout, a), getattr(MaxoutOptions(), a))
                      for f, a in MAXOUT_KEYS.items()
                      if getattr(maxout, a) != getattr(MaxoutOptions(), a)]
            raise FitnetsError(
                f"model {name!r} is not one of the built-in maxout nets, so "
                + ", ".join(f"{key}.{f}={_shown(v)}" for f, v, _ in fields)
                + " cannot apply to it: leave "
                + ("it" if len(fields) == 1 else "them") + " out or set "
                + " ".join(f"{key}.{f}={_shown(d)}" for f, _, d in fields)
                + f". Maxout nets: {', '.join(sorted(MAXOUT_NETS))}."
            )
    if ecosystem.is_ecosystem(name):
        bad = [k for k in sizes if k != "context"]
        if bad:
            raise FitnetsError(f"model {name!r} is sized by its library's own config: leave "
                               + ", ".join(f"{key}.{k}" for k in bad) + " out (null).")
        return ecosystem.build(name, num_classes, in_channels, pretrained, task=task,
                               context=sizes.get("context"))
    extra = {"options": maxout} if name in MAXOUT_NETS and maxout is not None else {}
    if sizes and name in MODELS:
        bad = [k for k in sizes if not takes(name, k)]
        if bad:
            sized = ", ".join(n for n in MODELS if takes(n, "width"))
            raise FitnetsError(f"model {name!r} has no {' or '.join(bad)} to set: leave "
                               + ", ".join(f"{key}.{k}" for k in bad)
                               + f" out (null). Models sized by these keys: {sized}.")
        extra.update(sizes)
    return _build(name, num_classes, in_channels, batchnorm, extra)


def takes(name: str, option: str) -> bool:
    """Whether the built-in model ``name``'s builder takes ``option`` (e.g. gpt: width)."""
    return name in MODELS and option in inspect.signature(MODELS[name]).parameters


def _build(name: str, num_classes: int, in_channels: int | None, batchnorm: bool,
           extra: dict) -> nn.Module:
    if isinstance(name, str) and ":" in name and name not in MODELS:
        return user_model(name, num_classes, in_channels)
    if name not in MODELS:
        close = difflib.get_close_matches(str(name), list(MODELS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise FitnetsError(
            f"unknown model {name!r}.{hint} Valid choices: {', '.join(sorted(MODELS))}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise FitnetsError(f"num_classes must be a positive integer, got {num_classes!r}")
    kwargs: dict[str, object] = {"num_classes": num_classes, "batchnorm": bool(batchnorm)}
    if in_channels is not None:
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise FitnetsError(f"in_channels must be a positive integer, got {in_channels!r}")
        kwargs["in_channels"] = in_channels
    return MODELS[name](**kwargs, **extra)


MAXOUT_NETS = [n for n, f in MODELS.items() if "options" in inspect.signature(f).parameters]


__all__ = [
    "MODELS",
    "ConvSpec",
    "Maxout",
    "MaxoutConv2d",
    "MaxoutConvBlock",
    "MaxoutLinear",
    "MaxoutNet",
    "MaxoutOptions",
    "apply_max_norm_",
    "build_model",
    "count_layers",
    "count_mults",
    "count_params",
    "count_weights",
    "data_init",
    "format_profile",
    "layer_table",
    "paper_init_",
    "profile",
    "takes",
]


def load_run_model(run_dir: str | Path) -> tuple[nn.Module, dict]:
    """A finished run's trained network (built from its ``model.pt`` bundle, weights-only,
    in eval mode, on the CPU) and the bundle (model name, classes, input shape, ...)."""
    run_dir = Path(run_dir)
    bundle = load_weights(run_dir / "model.pt")
    needed = ("model", "num_classes", "input_shape", "state_dict")
    if not isinstance(bundle, dict) or any(k not in bundle for k in needed):
        raise FitnetsError(
            f"'{run_dir / 'model.pt'}' is not a run's model bundle (it needs the keys "
            f"{', '.join(needed)}); export works on the directory of a finished run."
        )
    model = build_described(bundle)
    load_state(model, run_dir / "model.pt")  # run.load_into's checks, weights-only
    return model.eval(), bundle


def build_described(d: dict) -> nn.Module:
    """A fresh network from a description (a model.pt bundle or an export's config.json):
    its name, classes, input shape, batch norm and maxout options."""
    maxout = MaxoutOptions(**d["maxout"]) if d.get("maxout") else None
    return build_model(d["model"], num_classes=int(d["num_classes"]), maxout=maxout,
                       in_channels=int(d["input_shape"][0]),
                       batchnorm=bool(d.get("batchnorm", False)), sizes=d.get("sizes"),
                       task="lm" if d.get("tokenizer") else "classify")
