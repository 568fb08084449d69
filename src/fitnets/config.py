"""Run configuration: dataclasses with every default, YAML recipes and dotted overrides.

A recipe (YAML) only overrides the defaults written here; ``key.sub=value`` pairs on the
command line override the recipe. Unknown keys and bad values are rejected with a message
that names them and lists what is allowed, so a typo never silently runs the default. A
key's own range is declared beside its field (``checked``: fitnets.config_rules); validate()
holds the checks across keys. The text itself is read by fitnets.config_yaml.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin

import yaml

from fitnets.config_rules import check_rules, checked, each, ge, gt, in_range, rule
from fitnets.config_yaml import Typed, deep_merge, load_yaml, nest, parse_override
from fitnets.errors import FitnetsError
from fitnets.names import DATASETS, METHODS, PREPROCESS, REGRESSOR_KINDS

# the rules that are not ranges (fitnets.config_rules), beside the fields below that use them
_TRIANGLE = rule("[start >= 0, 0 < peak < 1, end >= 0]",
                 lambda t: len(t) == 3 and 0 < t[1] < 1 and min(t) >= 0,
                 [0.2, 1.0, 0.07], [0.2, 0.0, 0.07], [-0.01, 0.23, 0.07], [0.2, 0.23])
_INCREASING = rule("increasing positive epochs",
                   lambda m: m == sorted(m) and all(e > 0 for e in m), [0], [3, 2])
_PAIR = rule("[guided, hint]", lambda pair: len(pair) == 2, ["conv1"], ["a", "b", "c"])
_DEVICE = rule("auto, cpu, cuda, cuda:N or mps",
               lambda d: d in ("auto", "cpu") or d.startswith(("cuda", "mps")), "tpu", "gpu")


@dataclass
class DataConfig:
    name: Literal[DATASETS] = "mnist"  # the one list: fitnets.names
    """Dataset: mnist, digits, cifar10, cifar100, svhn, folder or text (a language model's)."""
    root: Optional[str] = None
    """Where datasets live; default $FITNETS_DATA, else ~/.cache/fitnets."""
    path: Optional[str] = None
    """For name=folder: a directory or .zip laid out as train/<class>/*, test/<class>/*; for
    name=text: a .txt file (documents split at blank lines), a folder or .zip of .txt/.py/.md
    files (a document each) or a .jsonl file with a 'text' field (a document a line)."""
    val_size: Optional[int] = checked(None, ge(0))
    """Images held out of the training set for validation; null = the paper's split, 0 = none.
    name=text: documents held out (null = 10%; 10% more are the test split)."""
    tokenizer: str = "byte"
    """name=text: byte (built in: UTF-8 bytes and an end-of-document id, 257 ids, no download)
    or a local Hugging Face tokenizer folder (needs transformers); an hf: model must have this
    vocabulary (its own folder's tokenizer, when it holds one)."""
    block_size: int = checked(128, gt(0))
    """name=text: tokens a block trains on (each predicts the next token at every position)."""
    train_limit: int = checked(0, ge(0))
    """Keep N training images (0 = all), for quick runs: a class-balanced subset chosen with a
    fixed seed (the same for every run seed), in the dataset's order."""
    test_limit: int = checked(0, ge(0))
    """Keep N test images (0 = all): a class-balanced subset chosen as for train_limit."""
    download: bool = True
    """Download missing files from the canonical source (checksums verified)."""
    preprocess: Literal[PREPROCESS] = "scale"  # the one list: fitnets.names
    """Input transform fitted on the training split: scale, standardize, gcn_zca,
    gcn_zca_pylearn2 (GCN to L2 norm 55, as the authors' data) or lcn."""
    augment_pad: int = checked(0, ge(0))
    """Random translations: crop from the image padded by this many pixels (paper: 8)."""
    augment_pad_mode: Literal["zeros", "reflect"] = "zeros"
    """What translations bring in from the border: zeros (the mean after standardize; every
    recipe's) or reflect (the image mirrored about its edge pixels: airbench's, which the fast
    teacher's recipe departs from). tta=flip_shift's 1-pixel shifts fill the same way."""
    augment_flip: Literal[False, True, "alternate"] = False
    """Horizontal flips: true: each image with probability 1/2; alternate: a fixed half of the
    images in odd epochs, the other half in even ones (airbench; in-memory data only)."""
    tta: Literal["none", "flip", "flip_shift"] = "none"
    """Test-time augmentation of the final evaluation only (summary.json): flip: image and mirror;
    flip_shift: airbench's 6 views (both also shifted 1 px up-left and down-right, 1/8 each)."""
    batch_size: int = checked(128, gt(0))
    """Training batch size (the paper's 128)."""
    eval_batch_size: int = checked(1000, gt(0))
    """Batch size for evaluation."""
    image_size: Optional[int] = None
    """Image folders: fit every image to N x N (shorter side resized to N, centre crop); null = as
    stored (all one size), or in stream mode the first image's shorter side."""
    channels: Literal["auto", "rgb", "gray"] = "auto"
    """Image folders: auto = gray when every image is single-channel (stream mode: the first 2000
    files), else RGB."""
    mode: Literal["auto", "memory", "stream"] = "auto"
    """memory: decode everything once, keep it on the device; stream: decode on the fly in worker
    processes (image folders), or for name=text read each batch's blocks from the memory-mapped
    token file (corpora larger than memory; the same batches as memory mode); auto: memory when
    it fits in memory_limit_gb."""
    memory_limit_gb: Optional[float] = None
    """data.mode=auto: the most the in-memory path may hold (float32 images, int64 token blocks);
    null = half the machine's (or GPU's) memory."""
    workers: int = -1
    """Stream mode: DataLoader worker processes; -1 = this machine's cores (shared by its torchrun
    processes), at most 8."""
    random_crop: bool = False
    """Stream mode: random-resized crops (8-100% of the area, aspect 3/4-4/3) and flips, the
    ImageNet augmentation."""
    skip_bad_images: bool = False
    """Image folders: skip (and count) unreadable images instead of stopping with an error naming
    the file."""


@dataclass
class ModelConfig:
    name: str = "mnist_student"
    """A built-in model name (see `fitnets layers --list`), timm:NAME, torchvision:NAME or
    hf:DIR_OR_ID; on data.name=text, hf:DIR is a causal LM folder (GPT-2, Llama, ...: a config,
    and weights for a teacher) whose vocabulary is data.tokenizer's."""
    weights: Optional[str] = None
    """A run directory or a weights file (state dict) to load; needed for the teacher."""
    batchnorm: bool = False
    """Add batch normalisation to the built-in maxout nets (off in paper recipes)."""
    pretrained: bool = False
    """timm: / torchvision: / hf: models: start from the library's own weights (needs the
    hub, or its local cache); for files use weights= instead."""
    init: Literal["paper", "torch"] = "paper"
    """paper: uniform +-0.005 as the authors; torch: PyTorch's default initialisation."""
    pool_rounding: Literal["floor", "ceil"] = "floor"
    """Maxout nets' pooled map size: floor (PyTorch) or ceil (cuda-convnet, the authors' code)."""
    untied_biases: bool = False
    """Maxout convs get one bias per channel and position (pylearn2's tied_b=False, MNIST)."""
    dropout_input: float = checked(0.0, in_range(0, 1, closed="left"))
    """Maxout nets: drop probability of the first layer's input in training (maxout MNIST: 0.2)."""
    dropout_hidden: float = checked(0.0, in_range(0, 1, closed="left"))
    """Maxout nets: drop probability of every later layer's input (maxout paper: 0.5)."""
    dropout_input_rescale: bool = True
    """Scale kept inputs by 1/(1-p); the maxout paper's yaml files set false (input_scales 1)."""
    width: Optional[int] = checked(None, gt(0))
    """Sized models (gpt): the hidden width; null = the model's default."""
    depth: Optional[int] = checked(None, gt(0))
    """Sized models (gpt): the number of blocks; null = the model's default."""
    heads: Optional[int] = checked(None, gt(0))
    """Sized models (gpt): attention heads (must divide width); null = the model's default."""


@dataclass
class OptimConfig:
    """An optimiser and its schedule.

    ``name=rmsprop`` is torch's RMSprop (divides by sqrt(ms) + eps); ``rmsprop_pylearn2`` is
    the rule the authors' code ran (pylearn2: divides by max(sqrt(ms), rmsprop_floor), no
    momentum; see fitnets/optim.py). The paper recipes use rmsprop_pylearn2.
    """

    name: Literal["sgd", "adam", "rmsprop", "rmsprop_pylearn2"] = "rmsprop"
    """Optimiser; the paper used RMSProp (rmsprop_pylearn2: exactly as the authors ran it)."""
    lr: float = checked(0.0005, gt(0))
    """Learning rate (paper: 0.0005 MNIST, 0.005 CIFAR)."""
    momentum: float = checked(0.0, in_range(0, 1, closed="left"))
    """Momentum (SGD, RMSProp)."""
    nesterov: bool = False
    """Nesterov momentum (SGD)."""
    weight_decay: float = checked(0.0, ge(0))
    """L2 weight decay."""
    rmsprop_decay: float = checked(0.9, in_range(0, 1, closed="neither"))
    """RMSProp's moving-average decay (the paper's 0.9)."""
    eps: float = checked(1e-8, gt(0))
    """Optimiser epsilon (Adam, RMSProp)."""
    rmsprop_floor: float = checked(1e-5, gt(0))
    """rmsprop_pylearn2: floor of the RMS divisor (pylearn2's 1 / max_scaling = 1e-5)."""
    schedule: Literal["constant", "step", "cosine", "exponential", "triangle"] = "constant"
    """Learning-rate schedule, stepped once per epoch (triangle: every step)."""
    triangle: list[float] = checked([0.2, 0.23, 0.07], _TRIANGLE)
    """schedule=triangle [start, peak, end]: lr x start rising linearly to lr at fraction peak of
    the stage's steps, then falling to lr x end (airbench's)."""
    milestones: list[int] = checked([], _INCREASING)
    """Epochs at which the step schedule multiplies the rate by gamma."""
    gamma: float = checked(0.1, in_range(0, 1, closed="right"))
    """Factor of the step and exponential schedules."""
    max_norm: dict[str, float] = checked({}, each(ge(0)))
    """Max-norm constraints, parameter-name pattern -> limit, e.g. {"conv[12].*": 0.9}."""
    lr_scale: dict[str, float] = checked({}, each(ge(0)))
    """Per-layer learning-rate scales, parameter-name pattern -> scale (paper: 0.05 on conv)."""
    scale_decay: bool = True
    """lr_scale scales the weight decay too (torch's coupled decay); false: every weight shrinks by
    lr x weight_decay a step whatever its scale (airbench's BatchNorm biases)."""
    lookahead: int = checked(0, ge(0))
    """Lookahead every N steps (0 = off): ema = rho ema + (1 - rho) w, then w = ema (weights, BN
    statistics), rho = 0.95^N (step / stage steps)^3; w = ema at each epoch's end (airbench: 5)."""


@dataclass
class StageConfig:
    epochs: int = checked(10, ge(0))
    """Maximum number of epochs."""
    patience: int = checked(0, ge(0))
    """Early stopping: stop after this many epochs without improvement (0 = off)."""
    restore_best: bool = True
    """End the stage with the weights of its best validation epoch (with or without early
    stopping), so that best_epoch, model.pt and the summary's test_acc name one epoch
    (weights_epoch in summary.json); false: the last epoch's weights."""
    on_stall: Literal["warn", "stop"] = "warn"
    """Classifier stages (train, kd, backprop, joint), judged on optimiser steps: after
    5,000 steps and 75% of the stage (a shorter stage at its end), a stage whose held-out
    accuracy is no more than 2 points above chance (perplexity: no more than 2% below the
    unigram one), and has been for 75% of its steps so far, or whose
    train loss has not moved since epoch 1, is STALLED (a warning, "stalled" in the metrics).
    The verdict follows the run: a stage that leaves chance later is a slow start ("left
    chance at step N / epoch E", slow_start in summary.json), not a failure; one that ends
    stalled makes the run FAILED (summary.json stalled: true; train/distill exit with code 3).
    stop ends the stage once the verdict is given. Hint stages have their own checks."""
    label_smoothing: float = checked(0.0, in_range(0, 1, closed="left"))
    """Label smoothing of the cross-entropy on the labels (train and backprop; airbench: 0.2)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """The stage's optimiser and schedule."""


@dataclass
class HintConfig:
    pairs: list[list[str]] = checked([], each(_PAIR))
    """(guided student layer, hint teacher layer) pairs trained in turn; [] = models' defaults."""
    regressor: Literal[REGRESSOR_KINDS] = "auto"  # the one list: fitnets.names
    """conv: the paper's valid conv; fc; none; token: per-token linear for transformer token
    layers (N, T, D) and map <-> token pairs (auto picks it whenever a side is tokens);
    conv1x1/strided/transposed/interp: projections."""
    cls_token: Literal["auto", "keep", "drop"] = "auto"
    """Token hints: keep pairs the student's CLS (prefix) tokens with the teacher's; drop
    compares patch tokens only; auto keeps them when both sides have as many."""
    regressor_init: Literal["torch", "authors"] = "torch"
    """conv/fc regressor weights: torch's default, or the authors' U(+-0.05), zero biases."""
    nonlinearity: Literal["auto", "maxout", "relu", "none"] = "auto"
    """Regressor output non-linearity; auto copies the teacher's hint layer."""
    reduction: Literal["auto", "paper", "mean", "authors"] = "auto"
    """paper: half the sum of squares per example; mean: per element; authors: as their
    HintCost ran on conv maps (sum over rows only, mean over the rest); auto: paper with the
    paper's regressors (conv, fc), mean with projections (conv1x1, strided, transposed,
    interp, token: the sum diverges under typical SGD settings) and in joint mode."""
    beta: float = checked(100.0, ge(0))
    """method=joint: loss = cross-entropy + beta * hint loss (100 with the mean, as in CRD)."""
    stage: StageConfig = field(default_factory=lambda: StageConfig(epochs=10))
    """Stage 1 (hint training) length, early stopping and optimiser."""


@dataclass
class KDConfig:
    tau: float = checked(3.0, gt(0))
    """Softmax temperature (paper: 3). A teacher trained with label smoothing gives nearly
    flat soft targets at 3; the KD stage's first line says how sharp they are."""
    lambda_init: float = checked(4.0, ge(0))
    """Initial weight of the soft-target term (paper: 4)."""
    lambda_start: int = checked(5, ge(0))
    """Epoch at which lambda starts to decay (paper: 5)."""
    lambda_saturate: int = 150
    """Epoch at which lambda reaches lambda_final (paper: 150 MNIST, 400 CIFAR)."""
    lambda_final: float = checked(0.0, ge(0))
    """Final lambda (paper: 0 MNIST, 1 CIFAR); never below 0."""
    student_tau: Literal["paper", "one"] = "paper"
    """Soft term's student softmax: paper: P_S^tau; one: P_S^1, as the authors' KDCost ran."""
    tau_squared: bool = False
    """Multiply the soft term by tau^2 (Hinton et al.); off in the paper's mode."""
    pretrained_lr_scale: float = checked(1.0, ge(0))
    """Stage 2: learning-rate scale for the layers pre-trained by hints (paper's -lrs)."""


@dataclass
class PerfConfig:
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Autocast dtype; auto: bf16 on CUDA and on CPUs with native bf16, else fp32 (fp16: CUDA)."""
    channels_last: Literal["auto", True, False] = "auto"
    """NHWC memory format for models and batches; auto: on (measured faster on CPU and GPU)."""
    compile: bool = False
    """torch.compile each stage's step (in one process its loss whole: teacher, student and
    loss; under torchrun the DDP-wrapped module) and the teacher; evaluation stays eager
    (needs a C++ compiler on CPU)."""
    cuda_graphs: Literal["auto", True, False] = "auto"
    """Replay each compiled training step's loss and backward as CUDA graphs (compile's
    reduce-overhead mode); auto: on with perf.compile on one CUDA device; true also turns
    compile on. An epoch's last, smaller batch runs eagerly. CUDA only, one process."""
    teacher_cache: Literal["auto", "off", "memory", "disk"] = "auto"
    """A bank of the teacher's outputs for every view augmentation can show (each training
    image x 1 or 2 flips x (2 augment_pad + 1)^2 offsets), computed once and read per batch
    (distill/teacher_cache.py). memory: built per run; disk: built once into FITNETS_CACHE
    (default ~/.cache/fitnets/teacher), checksummed, resumable, and reused by every run with
    the same teacher, data, layer, views and precision; auto: memory without translations
    (disk above 2 GiB), and with them the bank on disk if one exists, else one built when it
    costs no more teacher forwards than the stage computing them inline (views <= its
    epochs), else the teacher runs per batch (it says how to build a shared bank); off: per
    batch. A bank changes nothing in the augmentation draws (each run keeps its own; the
    bank holds every view): outputs equal inline ones up to rounding (the batches the
    kernels saw, and bf16/fp16 storage under that autocast). A hint layer too large for
    memory or disk is computed inline (with a message)."""
    teacher_topk: int = checked(0, ge(0))
    """Keep only the teacher's k largest logits per output row in the bank (0: all). For a
    language model the bank holds vocabulary-size logits per token; with k it holds k values
    and their token ids (fp32; 8k bytes a token), and the soft targets become the teacher's
    distribution renormalised over its top k (the other tokens get probability 0), as cached
    top-k logits elsewhere (trl, torchtune). Inline forwards (no bank) keep every logit; hint
    layers are banked whole."""


@dataclass
class DistConfig:
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """Process-group backend under torchrun: auto = nccl on GPUs, gloo on CPUs."""
    scale_lr: bool = False
    """Multiply every learning rate by the number of processes (linear scaling rule)."""
    sync_bn: Literal["auto", True, False] = "auto"
    """Batch-norm statistics over the global batch (SyncBatchNorm); auto = on GPUs when the
    trained module has batch norm. torch's SyncBatchNorm is CUDA-only: on CPUs each rank
    normalises with its own slice."""


@dataclass
class SearchConfig:
    """``fitnets search``: the hint-pair search's defaults (its command-line flags override
    them). Plain ``fitnets train`` / ``distill`` ignore this section."""

    trials: int = checked(20, ge(1))
    """Trials in the study (all processes and machines that join it together)."""
    pairs: int = checked(4, ge(1))
    """Candidate (guided, hint) pairs searched: the k possible pairs nearest the middle of both
    networks, as `fitnets layers --teacher T --student S` ranks them (the default pair always
    among them)."""
    budget: dict[str, Any] = field(default_factory=dict)
    """Each trial's short budget, key -> value over the recipe (e.g. {train.epochs: 3,
    hints.stage.epochs: 1}); best.yaml leaves it out, for a full-length run."""
    space: dict[str, Any] = field(default_factory=dict)
    """Searched keys beyond or instead of the derived ones: key -> a list (choices),
    {low, high, log} (a range), or null (not searched: the recipe's value). Keys are config
    keys, or pair (choices GUIDED/HINT)."""


@dataclass
class Config:
    method: Literal[METHODS] = "fitnet"  # the one list: fitnets.names
    """distill: fitnet (hints then KD), kd, backprop (labels), joint (CE + beta*hint, 1 stage)."""
    seed: int = 0
    """Seed for initialisation, shuffling and augmentation."""
    device: str = checked("auto", _DEVICE)
    """auto (cuda if available, else cpu), cpu, cuda, cuda:1, ..."""
    out: Optional[str] = None
    """Run directory; default runs/<recipe or command>-<time>."""
    checkpoint_steps: int = 0
    """Also checkpoint every N optimiser steps inside an epoch (0 = at epoch ends only); for long
    epochs, a killed run resumes there, exactly."""
    tracking: Literal["none", "mlflow", "wandb"] = "none"
    """Also send every per-epoch record to MLflow (MLFLOW_TRACKING_URI, else RUN_DIR/mlruns) or
    Weights & Biases (WANDB_MODE, WANDB_PROJECT); metrics.jsonl stays the source of truth."""
    tensorboard: bool = False
    """Also write every per-epoch metric to RUN_DIR/tensorboard (needs fitnets[tensorboard])."""
    data: DataConfig = field(default_factory=DataConfig)
    """The dataset and its preprocessing."""
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name="mnist_teacher"))
    """The network that `fitnets train` trains."""
    teacher: ModelConfig = field(default_factory=lambda: ModelConfig(name="mnist_teacher"))
    """The teacher of `fitnets distill` (weights required for kd and fitnet)."""
    student: ModelConfig = field(default_factory=ModelConfig)
    """The student of `fitnets distill`."""
    hints: HintConfig = field(default_factory=HintConfig)
    """Stage 1: hint training."""
    kd: KDConfig = field(default_factory=KDConfig)
    """Stage 2: knowledge distillation with lambda annealed."""
    train: StageConfig = field(default_factory=lambda: StageConfig(epochs=10))
    """The label-trained stage: `fitnets train`, stage 2 of distill, and the baselines."""
    perf: PerfConfig = field(default_factory=PerfConfig)
    """Speed switches: precision, memory layout, compilation, the teacher cache."""
    dist: DistConfig = field(default_factory=DistConfig)
    """Multi-process training (torchrun); ignored in a single process."""
    search: SearchConfig = field(default_factory=SearchConfig)
    """`fitnets search` (hint pairs, regressors, KD settings): trials, budget, space."""


# --------------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if _is_optional(tp):
        return _type_name(_strip_optional(tp)) + " or null"
    if origin is list:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(get_args(tp)[0])} to {_type_name(get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if tp is Any:
        return "any YAML value"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(tp, str(tp))


def _is_optional(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def _strip_optional(tp: Any) -> Any:
    return next(a for a in get_args(tp) if a is not type(None))


# What YAML reads as a boolean; a choice spelled like one of these is what the user meant.
_YAML_BOOL_WORDS = {True: ("on", "yes", "true", "y"), False: ("off", "no", "false", "n")}


def _yaml_word(value: Any, choices: tuple) -> Any:
    """``value`` as the one string choice that YAML read as this boolean (``off`` -> False
    -> 'off'), when the choices hold no boolean of their own, or as the choice it spells in
    another case (``Stream``); else ``value`` unchanged."""
    if isinstance(value, str):
        same = [c for c in choices if isinstance(c, str) and c.lower() == value.lower()]
        return same[0] if same else value
    if not isinstance(value, bool) or value in [c for c in choices if isinstance(c, bool)]:
        return value
    words = [c for c in choices if isinstance(c, str) and c.lower() in _YAML_BOOL_WORDS[value]]
    return words[0] if len(words) == 1 else value


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the field type ``tp``; return it (ints widen to floats)."""
    if isinstance(value, Typed):
        plain = _strip_optional(tp) if _is_optional(tp) else tp
        value = value.text if plain is str else value.value
    if tp is Any:  # plain YAML data (the search section's space and budget)
        return value
    bad = FitnetsError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}.")
    if _is_optional(tp):
        return None if value is None else _coerce(value, _strip_optional(tp), key)
    origin = get_origin(tp)
    if origin is Literal:
        value = _yaml_word(value, get_args(tp))
        if value not in get_args(tp):
            close = difflib.get_close_matches(str(value), [str(a) for a in get_args(tp)], 1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise FitnetsError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}.{hint}")
        return value
    if (dataclasses.is_dataclass(tp) or origin in (list, dict)) and not isinstance(
            value, list if origin is list else dict):
        raise bad
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if origin is list:
        return [_coerce(v, get_args(tp)[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        kt, vt = get_args(tp)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool or tp is int:  # a bool is an int to Python, never to the config
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug in this file


def _unknown_key(cls: type, key: str, prefix: str) -> FitnetsError:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, 1)
    hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
    return FitnetsError(f"unknown config key '{prefix}{key}'.{hint} Valid keys here: "
                        f"{', '.join(names)}.")


def _build(cls: type, values: dict, prefix: str = "", base: Any = None) -> Any:
    """Dataclass ``cls`` from ``base`` (default: ``cls()``) updated by nested ``values``."""
    hints = typing.get_type_hints(cls)
    base = cls() if base is None else base
    kwargs = {}
    for key, value in values.items():
        if not isinstance(key, str) or key not in hints:
            raise _unknown_key(cls, str(key), prefix)
        tp = hints[key]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            # start from the field's own default, which may differ from tp()
            kwargs[key] = _build(tp, value, f"{prefix}{key}.", getattr(base, key))
        else:
            kwargs[key] = _coerce(value, tp, prefix + key)
    return dataclasses.replace(base, **kwargs)


# --------------------------------------------------------------------------- validation


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise FitnetsError(message)


def validate(cfg: Config) -> Config:
    """Each key's own rule (``checked`` beside its field), then the checks across keys."""
    check_rules(cfg)
    for name, o in (("train", cfg.train.optim), ("hints.stage", cfg.hints.stage.optim)):
        _check(o.name != "rmsprop_pylearn2" or (o.momentum == 0 and not o.nesterov),
               f"'{name}.optim.name=rmsprop_pylearn2' has no momentum (pylearn2's RMSProp has "
               f"none); set '{name}.optim.momentum=0' or use name=rmsprop.")
    k = cfg.kd
    _check(k.lambda_saturate > k.lambda_start,
           f"config key 'kd.lambda_saturate' ({k.lambda_saturate}) must be greater than "
           f"'kd.lambda_start' ({k.lambda_start}).")
    _check(not (cfg.perf.teacher_topk and cfg.perf.teacher_cache == "off"),
           f"'perf.teacher_topk={cfg.perf.teacher_topk}' keeps the top logits of the teacher "
           "bank, but 'perf.teacher_cache=off' builds none (inline forwards keep every logit): "
           "set perf.teacher_cache=auto, memory or disk, or drop teacher_topk.")
    return cfg


# --------------------------------------------------------------------------- public API


def make_config(recipe: str | Path | None = None, overrides: list[str] = (),
                base: dict | None = None, settings: dict | None = None) -> Config:
    """Defaults <- ``base`` <- recipe YAML <- ``settings`` (nested, as in a recipe) <-
    ``key=value`` overrides, validated."""
    values: dict = dict(base or {})
    if recipe is not None:
        values = deep_merge(values, load_yaml(recipe))
    if settings:
        values = deep_merge(values, _plain(settings))
    for text in overrides:
        path, value = parse_override(text)
        values = deep_merge(values, nest(path, value))
    return validate(_build(Config, values))


def _plain(value: Any) -> Any:
    """Settings given from Python may hold paths (run directories, weights): as text."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, docstring) for every config key, read from this file's docstrings."""
    import ast
    import inspect

    docs: dict[str, str] = {}
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr):
            docs[node.target.id] = " ".join(nxt.value.value.split())  # type: ignore
    rows = []
    base = cls()
    for f in dataclasses.fields(cls):
        value = getattr(base, f.name)
        if dataclasses.is_dataclass(value):
            rows.append((prefix + f.name, "", docs.get(f.name, "")))
            rows += describe(type(value), prefix + f.name + ".")
        else:
            rows.append((prefix + f.name, repr(value), docs.get(f.name, "")))
    return rows
