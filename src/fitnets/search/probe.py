"""What a search's trials will meet, found once before any trial runs: the data's split sizes
and input shape (read as uint8, or listed for image folders: nothing is preprocessed), and
the student's and teacher's layers (built without weights, on the meta device where their
forward runs there, else on the CPU), so that pairs and regressors are checked up front."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
from torch import nn

from fitnets.config import Config, DataConfig, ModelConfig
from fitnets.errors import FitnetsError

SHOWN_LAYERS = 16  # layers a refusal lists


@dataclass
class DataFacts:
    """A dataset's sizes as a run splits it (after the validation split and train_limit)."""

    train: int
    val: int  # 0: no validation split
    input_shape: tuple | None  # (C, H, W), (T,) for text; None where only decoding would tell
    classes: int | None  # the vocabulary for text
    text: bool = False  # token blocks (data.name=text): a language model's data


_FACTS: dict[str, DataFacts] = {}


def data_facts(d: DataConfig) -> DataFacts:
    """The sizes of the data ``d`` names (read once per process and data config)."""
    key = json.dumps(asdict(d), sort_keys=True, default=str)
    if key not in _FACTS:
        _FACTS[key] = _read_facts(d)
    return _FACTS[key]


def _read_facts(d: DataConfig) -> DataFacts:
    from fitnets.data.prepare import listed_plan, open_source
    from fitnets.data.splits import read
    from fitnets.data.text import Text

    source = open_source(d)
    if isinstance(source, Text):  # blocks of the token file (built here once, then reused)
        tokens = source.tokens()
        # whole blocks of block_size + 1 tokens, overlapping by one (fitnets.data.text.blocks)
        n = {s: max(0, (len(t) - 1) // d.block_size) for s, t in tokens.splits.items()}
        train = min(n["train"], d.train_limit) if d.train_limit else n["train"]
        return DataFacts(train, n["val"], (d.block_size,), tokens.vocab_size, text=True)
    if source.files("train") is not None:  # image files: listed, not decoded
        p = listed_plan(source, d)
        channels = {"gray": 1, "rgb": 3}.get(d.channels)
        shape = (channels, d.image_size, d.image_size) if channels and d.image_size else None
        return DataFacts(len(p.train), len(p.val) if p.val is not None else 0, shape, None)
    ds = read(source, val_size=d.val_size, train_limit=d.train_limit, test_limit=d.test_limit)
    return DataFacts(len(ds.train.y), len(ds.val.y) if ds.val is not None else 0,
                     tuple(ds.input_shape), ds.num_classes)


class Nets:
    """A config's student and teacher without weights, and every layer's output shape."""

    def __init__(self, cfg: Config, facts: DataFacts | None = None):
        self.names = {"student": cfg.student.name, "teacher": cfg.teacher.name}
        for name in self.names.values():
            if name.startswith("python:"):
                raise FitnetsError("a search derives and checks its hint pairs on named models; "
                                   "list the pairs yourself with --space pair=GUIDED/HINT,...")
        try:  # the meta device: no memory, no arithmetic
            self._build(cfg, facts, torch.device("meta"))
        except Exception:  # an op without a meta kernel: the CPU (its errors are the real ones)
            self._build(cfg, facts, torch.device("cpu"))

    def _build(self, cfg: Config, facts: DataFacts | None, device: torch.device) -> None:
        from fitnets.distill.taps import layer_shapes

        self.device = device
        with device:
            self.student = _model(cfg.student, facts)
            self.teacher = _model(cfg.teacher, facts)
        shape = facts.input_shape if facts is not None else None
        for role, m in (("student", self.student), ("teacher", self.teacher)):
            own = getattr(m, "input_shape", None)
            if shape is not None and own is not None and tuple(own) != tuple(shape):
                raise FitnetsError(f"the {role} '{self.names[role]}' is built for inputs "
                                   f"{tuple(own)} but the data gives {tuple(shape)}; pick a "
                                   "model for this dataset (`fitnets layers --list`).")
            shape = shape or own
        self.input_shape = tuple(shape) if shape is not None else None
        self.shapes = ({"student": layer_shapes(self.student, self.input_shape),
                        "teacher": layer_shapes(self.teacher, self.input_shape)}
                       if self.input_shape is not None else None)

    def rows(self, kind: str) -> list[dict]:
        """Every (guided, hint) pair with the regressor ``kind`` (``fitnets layers``)."""
        from fitnets.distill.suggest import suggest_pairs

        if self.input_shape is None:
            raise FitnetsError(f"the models '{self.names['student']}' and "
                               f"'{self.names['teacher']}' do not say what input they take (no "
                               "input_shape), so their hint pairs cannot be listed here; give "
                               "them with --space pair=GUIDED/HINT,...")
        return suggest_pairs(self.student, self.teacher, self.input_shape, kind)

    def check_layers(self, guided: str, hint: str, where: str) -> None:
        """Refuse a pair whose layers the student or the teacher lacks, naming the layers
        there are."""
        from fitnets.distill.taps import get_layer, parse_tap

        for role, layer in (("student", guided), ("teacher", hint)):
            model = getattr(self, role)
            if self.shapes is not None:
                if layer in self.shapes[role]:
                    continue
            else:
                try:
                    get_layer(model, parse_tap(layer)[0])
                    continue
                except FitnetsError:
                    pass
            raise FitnetsError(f"{where}: the {role} '{self.names[role]}' has no layer "
                               f"'{layer}'; its layers: {self.layer_list(role)}. "
                               "`fitnets layers --teacher T --student S` lists the pairs.")

    def layer_list(self, role: str) -> str:
        from fitnets.distill.suggest import candidate_layers

        model = getattr(self, role)
        names = ([n for n, _ in candidate_layers(model, self.input_shape)]
                 if self.input_shape is not None else [])
        names = names or [n for n, _ in model.named_modules() if n]
        more = f" ... ({len(names)} in all)" if len(names) > SHOWN_LAYERS else ""
        return ", ".join(names[:SHOWN_LAYERS]) + more

    def check_regressor(self, cfg: Config, pair: tuple[str, str], where: str) -> None:
        """Refuse a pair the config's regressor cannot map (built as a trial builds it)."""
        from fitnets.distill.hint import regressor_for

        if self.input_shape is None:
            return
        try:
            with self.device:
                regressor_for(cfg, self.student, self.teacher, pair, 0, self.input_shape)
        except FitnetsError as e:
            raise FitnetsError(f"{where} with hints.regressor={cfg.hints.regressor}: "
                               f"{e}") from None

    def row(self, guided: str, hint: str, kind: str, where: str) -> dict:
        """A pair's row as :meth:`rows` gives it, for any pair of existing layers (the
        shapes None where the models do not say what input they take)."""
        from fitnets.distill.regressor import (
            build_regressor,
            describe_regressor,
            possible_kinds,
        )

        self.check_layers(guided, hint, where)
        g = self.shapes["student"][guided] if self.shapes else None
        h = self.shapes["teacher"][hint] if self.shapes else None
        row = {"guided": guided, "guided_shape": g, "hint": hint, "hint_shape": h,
               "kind": kind, "params": None, "default": False, "error": None,
               "possible": g is None or kind == "auto" or kind in possible_kinds(g, h)}
        if g is not None and row["possible"]:
            with torch.device("meta"):
                row.update(describe_regressor(build_regressor(g, h, kind), g))
        return row


def _model(m: ModelConfig, facts: DataFacts | None) -> nn.Module:
    """The model ``m`` names, as a run builds it (classes and channels from the data), without
    the library's pretrained weights (the layers are the same)."""
    from fitnets.models import MaxoutOptions, build_model, takes

    shape = facts.input_shape if facts is not None else None
    text = facts is not None and facts.text
    sizes = {"width": m.width, "depth": m.depth, "heads": m.heads}
    if text and takes(m.name, "context"):
        sizes["context"] = shape[0]  # a GPT's positions: the data's block length, as a run
    return build_model(m.name, num_classes=(facts.classes if facts and facts.classes else 10),
                       in_channels=shape[0] if shape and not text else None,
                       batchnorm=m.batchnorm, maxout=MaxoutOptions.of(m), pretrained=False,
                       sizes=sizes)


_NETS: dict[str, Nets] = {}


def nets_of(cfg: Config, facts: DataFacts | None = None) -> Nets:
    """:class:`Nets` of ``cfg``'s student and teacher, built once per process."""
    if facts is None and cfg.data.name == "text":  # a block's positions, read from the config
        facts = DataFacts(0, 0, (cfg.data.block_size,), None, text=True)  # (no corpus read)
    key = json.dumps([asdict(cfg.student), asdict(cfg.teacher),
                      asdict(facts) if facts is not None else None], default=str)
    if key not in _NETS:
        _NETS[key] = Nets(cfg, facts)
    return _NETS[key]
