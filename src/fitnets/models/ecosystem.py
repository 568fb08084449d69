"""Models from the ecosystems by name, each library imported only when used:

- ``timm:NAME`` (any ``timm.create_model`` name), keyword arguments after ``?``:
  ``timm:vit_tiny_patch16_224?drop_path_rate=0.1&img_size=32``; classes and channels are
  passed as timm expects (``num_classes``, ``in_chans``).
- ``torchvision:NAME`` (``torchvision.models.get_model``), e.g. ``torchvision:resnet18``;
  ``num_classes`` passed, 3 input channels only.
- ``hf:DIR_OR_ID``: a Hugging Face image classifier (``AutoModelForImageClassification``)
  or, for a text model (BERT-like: any ``AutoModelForSequenceClassification`` type),
  a sequence classifier, from a local folder (``save_pretrained``) or the hub, with that
  folder's weights (a teacher needs no ``teacher.weights`` then); wrapped so that
  ``model(x)`` returns the logits (a text model takes token ids ``(N, T)`` and masks the
  padding id), its layers under ``model.`` (``model.vit.layers.3``,
  ``model.bert.encoder.layer.3``); ``num_labels`` set.

``pretrained=True`` asks the library for its own weights (timm / torchvision download them;
hf: loads the folder's or the hub's weights, which it always does); where the hub cannot be
reached, the error says so and how to pass weights from a file instead.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from fitnets.errors import FitnetsError

PREFIXES = ("timm:", "torchvision:", "hf:")
EXTRAS = {"timm": "timm", "torchvision": "torchvision", "hf": "hf"}


def is_ecosystem(spec: str) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIXES)


def parse(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``"timm:resnet18?drop_rate=0.1"`` -> ("timm", "resnet18", {"drop_rate": 0.1})."""
    lib, _, rest = spec.partition(":")
    name, _, query = rest.partition("?")
    kwargs: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise FitnetsError(f"model '{spec}': write keyword arguments as ?key=value&key=value "
                               f"(got '{part}').")
        kwargs[key] = yaml.safe_load(value)  # numbers, booleans, lists as in a recipe
    if not name:
        raise FitnetsError(f"model '{spec}' names no model after '{lib}:'.")
    return lib, name, kwargs


def _library(lib: str, module: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise FitnetsError(f"model specs '{lib}:...' need the {module} package, which does not "
                           f"import here ({e}); install it with pip install "
                           f"'fitnets[{EXTRAS[lib]}]'.") from None


def build(spec: str, num_classes: int = 10, in_channels: int | None = None,
          pretrained: bool = False) -> nn.Module:
    lib, name, kwargs = parse(spec)
    try:
        if lib == "timm":
            timm = _library(lib, "timm")
            if in_channels is not None:
                kwargs.setdefault("in_chans", in_channels)
            return timm.create_model(name, pretrained=pretrained, num_classes=num_classes,
                                     **kwargs)
        if lib == "torchvision":
            models = _library(lib, "torchvision.models")
            if in_channels not in (None, 3):
                raise FitnetsError(f"torchvision models take 3-channel images; '{spec}' was "
                                   f"asked for {in_channels} (set data.channels=rgb).")
            return models.get_model(name, weights="DEFAULT" if pretrained else None,
                                    num_classes=num_classes, **kwargs)
        return HFClassifier.load(name, num_classes, in_channels, kwargs)
    except FitnetsError:
        raise
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        first = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        hint = (" Pretrained weights come from the hub, which this machine may not reach: "
                "set pretrained=false and teacher.weights=FILE_OR_FOLDER (.safetensors, "
                ".pt or a run directory) instead." if pretrained or lib == "hf" else "")
        raise FitnetsError(f"cannot build model '{spec}': {type(e).__name__}: {first}.{hint}"
                           ) from None


class HFClassifier(nn.Module):
    """A Hugging Face classifier whose ``forward(x)`` returns the logits: of images
    (``pixel_values``), or of token ids (``input_ids``, with the attention mask that hides
    the config's ``pad_token_id``; ``input_dtype`` is then ``torch.long``)."""

    def __init__(self, model: nn.Module, text: bool = False):
        super().__init__()
        self.model = model
        self.text = text
        self.input_dtype = torch.long if text else None
        self.pad_token_id = getattr(model.config, "pad_token_id", None) if text else None

    @classmethod
    def load(cls, where: str, num_classes: int, in_channels: int | None,
             kwargs: dict) -> HFClassifier:
        transformers = _library("hf", "transformers")
        from transformers.models.auto import modeling_auto

        local = Path(where).expanduser()
        source = str(local) if local.exists() else where
        kind = transformers.AutoConfig.from_pretrained(source).model_type
        images = modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
        texts = modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
        if kind not in images and kind not in texts:
            raise FitnetsError(f"hf model '{where}' is a '{kind}' model, which transformers "
                               "builds neither as an image classifier nor as a sequence "
                               "(text) classifier; fitnets takes those two kinds.")
        auto = (transformers.AutoModelForImageClassification if kind in images
                else transformers.AutoModelForSequenceClassification)
        model = auto.from_pretrained(source, num_labels=num_classes,
                                     ignore_mismatched_sizes=True, **kwargs)
        if kind not in images:
            return cls(model, text=True)
        channels = getattr(model.config, "num_channels", 3)
        if in_channels is not None and channels != in_channels:
            raise FitnetsError(f"hf model '{where}' takes {channels}-channel images but the "
                               f"data have {in_channels} (set data.channels to match).")
        return cls(model)

    def forward(self, x):
        if not self.text:
            return self.model(pixel_values=x).logits
        if x.is_floating_point():
            raise FitnetsError(f"this hf text model takes token ids (an integer tensor N x T), "
                               f"got {x.dtype} {tuple(x.shape)}: give it a dataset of "
                               "input_ids (fitnets.distill(train=...), items (ids, label)).")
        mask = None if self.pad_token_id is None else (x != self.pad_token_id).long()
        return self.model(input_ids=x, attention_mask=mask).logits
