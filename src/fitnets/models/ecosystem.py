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
- ``hf:DIR`` of a causal language model (``GPT2LMHeadModel``, ``LlamaForCausalLM``, any
  ``AutoModelForCausalLM`` type) on ``data.name=text`` (or, outside a run, a folder whose
  config names a causal-LM architecture): ``HFCausalLM``, ids (B, T) in, next-token logits
  (B, T, vocab) out as models/gpt.py's, its layers under their Hugging Face names
  (``transformer.h.3``, ``model.layers.3``); the folder's weights when it has them, else
  the config's fresh initialisation (a student).
- ``hf:DIR`` of a masked language model (``BertForMaskedLM``, ``RobertaForMaskedLM``,
  ``DistilBertForMaskedLM``, any ``AutoModelForMaskedLM`` type, as its config's
  ``architectures`` says) on ``data.name=text``: ``HFMaskedLM``, the same wrapper (ids in,
  (B, T, vocab) logits out: at each position the token that was there), layers under
  their Hugging Face names (``bert.encoder.layer.3``); a run of masked LMs trains the
  masked objective (data/text.py).

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
          pretrained: bool = False, task: str | None = None,
          context: int | None = None) -> nn.Module:
    """``task`` (hf: only): "lm" (a language model on data.name=text: a causal LM),
    "classify" (an image or sequence classifier), None (the folder's architecture says);
    ``context``: a language model's block length."""
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
        if task != "classify" and (task == "lm" or is_causal_lm(name) or is_masked_lm(name)):
            if is_masked_lm(name):
                return HFMaskedLM.load(name, context, kwargs)
            return HFCausalLM.load(name, context, kwargs)
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


# ------------------------------------------------------------------- causal language models

WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json",
                "pytorch_model.bin.index.json")


def _source(where: str) -> str:
    local = Path(where).expanduser()
    return str(local) if local.exists() else where


def _lm_classes() -> tuple[set[str], set[str], set[str]]:
    """The model types transformers builds as causal LMs, and the causal-LM and masked-LM
    class names it knows."""
    from transformers.models.auto import modeling_auto

    def names(mapping) -> set[str]:
        out: set[str] = set()
        for v in mapping.values():
            out.update([v] if isinstance(v, str) else v)
        return out

    causal = modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    return (set(causal), names(causal),
            names(modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES))


def is_causal_lm(where: str) -> bool:
    """Whether the hf folder (or hub id) ``where`` was saved as a causal language model (its
    config's ``architectures``); False when it cannot be read here (the classifier path
    then says why)."""
    try:
        transformers = _library("hf", "transformers")
        config = transformers.AutoConfig.from_pretrained(_source(where))
    except (OSError, ValueError, KeyError):
        return False
    _, causal, _ = _lm_classes()
    return any(a in causal for a in (config.architectures or []))


def is_masked_lm(where: str) -> bool:
    """Whether the hf folder (or hub id) ``where`` was saved as a masked language model
    (its config's ``architectures``: a *ForMaskedLM class and no causal-LM one)."""
    try:
        transformers = _library("hf", "transformers")
        config = transformers.AutoConfig.from_pretrained(_source(where))
    except (OSError, ValueError, KeyError, FitnetsError):
        return False
    _, causal, masked = _lm_classes()
    archs = config.architectures or []
    return any(a in masked for a in archs) and not any(a in causal for a in archs)


def has_weights(folder: Path) -> bool:
    return folder.is_dir() and any(any(folder.glob(p)) for p in WEIGHT_FILES)


class HFLanguageModel(nn.Module):
    """A Hugging Face language model as models/gpt.py's GPT or models/bert.py's BERT:
    ``forward(ids)`` (B, T) int64 -> logits (B, T, vocab). The Hugging Face model's children
    are this module's own (``transformer``, ``lm_head`` / ``model``, ``lm_head``), so its
    layers and its state dict keep their Hugging Face names; ``default_hint`` /
    ``default_guided``: the block before the middle, as the GPT's. ``weights``: the folder's
    weights were loaded (False: a fresh initialisation from its config). Subclasses:
    ``HFCausalLM`` and ``HFMaskedLM``."""

    num_prefix_tokens = 0  # every token is a position of the text (token regressors read it)
    input_dtype = torch.long
    objective = ""  # "causal" (next-token prediction) or "masked"
    auto_class = ""  # the transformers Auto class that loads the folder

    def __init__(self, model: nn.Module, context: int | None, weights: bool, where: str):
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        object.__setattr__(self, "_hf", model)  # not a child: its children are ours
        config = model.config.get_text_config()
        self.where, self.weights = where, weights
        self.num_classes = int(config.vocab_size)
        self.positions = _positions(config)
        if context is not None and self.positions is not None and context > self.positions:
            raise FitnetsError(f"hf model '{where}' has {self.positions} positions, fewer "
                               f"than data.block_size={context}: lower data.block_size to "
                               f"at most {self.positions}.")
        self.input_shape = (context or min(self.positions or 128, 128),)
        self.sizes = {"context": self.input_shape[0]}  # model.pt: rebuilt at this length
        depth = int(getattr(config, "num_hidden_layers", 0) or 0)
        lists = [n for n, m in self.named_modules()
                 if isinstance(m, nn.ModuleList) and len(m) == depth and depth]
        self.block_names = [f"{lists[0]}.{i}" for i in range(depth)] if lists else []
        if self.block_names:
            self.default_hint = self.default_guided = self.block_names[max(depth // 2 - 1, 0)]

    @classmethod
    def check(cls, where: str, config) -> None:
        """Refuses a folder whose config is not this kind of language model."""

    @classmethod
    def load(cls, where: str, context: int | None, kwargs: dict):
        transformers = _library("hf", "transformers")
        source = _source(where)
        config = transformers.AutoConfig.from_pretrained(source)
        cls.check(where, config)
        local = Path(source)
        weights = not local.exists() or has_weights(local)  # a hub id: from_pretrained's
        auto = getattr(transformers, cls.auto_class)
        model = (auto.from_pretrained(source, **kwargs) if weights
                 else auto.from_config(config, **kwargs))
        return cls(model, context, weights, where)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.is_floating_point():
            raise FitnetsError(f"hf {self.objective} LM '{self.where}' takes token ids (an "
                               f"integer tensor B x T), got {ids.dtype} {tuple(ids.shape)}.")
        return self.logits(ids)  # (B, T, vocab)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def save_pretrained(self, folder, **kwargs) -> None:
        """The whole Hugging Face model's folder (not its first child's, which also has a
        ``save_pretrained``): what an export writes for an hf: student."""
        self._hf.save_pretrained(folder, **kwargs)

    def train(self, mode: bool = True) -> HFLanguageModel:
        super().train(mode)
        self._hf.training = mode  # the root is not a child; its children follow super()
        return self


class HFCausalLM(HFLanguageModel):
    """A Hugging Face causal LM (GPT-2, Llama, any ``AutoModelForCausalLM``): next-token
    logits at every position."""

    objective = "causal"
    auto_class = "AutoModelForCausalLM"

    @classmethod
    def check(cls, where: str, config) -> None:
        types, causal, masked = _lm_classes()
        archs, kind = config.architectures or [], config.model_type
        saved_masked = any(a in masked for a in archs) and not any(a in causal for a in archs)
        if saved_masked or kind not in types:
            what = ", ".join(archs) or f"a '{kind}' model"
            raise FitnetsError(
                f"hf model '{where}' is {what}, not a causal language model: data.name=text "
                "trains next-token prediction (GPT-2, Llama, ... saved as *LMHeadModel / "
                "*ForCausalLM), or masked-token prediction when the folder's config names "
                "a *ForMaskedLM architecture (BertForMaskedLM, RobertaForMaskedLM).")

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self._hf(input_ids=ids, use_cache=False).logits


class HFMaskedLM(HFLanguageModel):
    """A Hugging Face masked LM (``*ForMaskedLM``) as models/bert.py's BERT: some of the
    ids are the mask id; the logits are of the tokens at every position."""

    objective = "masked"
    auto_class = "AutoModelForMaskedLM"

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self._hf(input_ids=ids).logits  # no padding in a block


def _positions(config) -> int | None:
    """A text config's position limit (GPT-2: n_positions; most: max_position_embeddings)."""
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
