"""The searched keys: what the tool derives from the method and the model pair, the recipe's
``search.space`` and ``--space`` over it, and a trial's config from its values. Needs no
Optuna: a :class:`Dim` suggests through whatever trial object it is given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from fitnets.config import Config, make_config, to_dict
from fitnets.config_yaml import nest_dotted, safe_load
from fitnets.distill import methods
from fitnets.errors import FitnetsError

# the regressor kinds a derived space may offer (fc is left out: a map-to-map fc regressor
# has millions of weights; name it in the space to search it)
SEARCHED_KINDS = ("conv", "conv1x1", "strided", "transposed", "interp", "token", "none")


@dataclass
class Dim:
    """One searched key: ``choices`` (categorical), or a ``low``..``high`` range."""

    key: str  # a config key (kd.tau), or "pair" (GUIDED/HINT)
    choices: list | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    def suggest(self, trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, self.choices)
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        return isinstance(value, (int, float)) and self.low <= value <= self.high

    def corners(self) -> list:
        """The values a check builds a config with: every choice, or both bounds."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def describe(self) -> str:
        if self.choices is not None:
            return ", ".join(str(c) for c in self.choices)
        return f"{self.low:g} .. {self.high:g}" + (" (log)" if self.log else "") + (
            " (integer)" if self.integer else "")


def parse_dim(key: str, value: Any) -> Dim | None:
    """A space entry: a list (choices), {low, high[, log]} (a range), None (not searched), or
    the command line's text: ``a,b,c`` (choices), ``LOW:HIGH`` or ``LOW:HIGH:log``, or empty."""
    if isinstance(value, str):
        return _parse_dim_text(key, value)
    if value is None:
        return None
    if isinstance(value, list):
        if not value:
            raise FitnetsError(f"search space '{key}': the list of choices is empty.")
        return Dim(key, choices=[_pair_text(v) if key == "pair" else v for v in value])
    if isinstance(value, dict) and {"low", "high"} <= set(value) <= {"low", "high", "log"}:
        return _range(key, value["low"], value["high"], bool(value.get("log", False)))
    raise FitnetsError(f"search space '{key}': expected a list of choices, {{low, high, log}} "
                       f"or null, got {value!r}.")


def _parse_dim_text(key: str, text: str) -> Dim | None:
    text = text.strip()
    if not text:
        return None
    parts = text.split(":")
    if key != "pair" and len(parts) in (2, 3) and "," not in text:
        try:
            low, high = (safe_load(p) for p in parts[:2])
        except yaml.YAMLError:
            low = high = None
        if _is_number(low) and _is_number(high):
            if len(parts) == 3 and parts[2] != "log":
                raise FitnetsError(f"--space {key}={text}: a range is LOW:HIGH or "
                                   "LOW:HIGH:log.")
            return _range(key, low, high, len(parts) == 3)
    choices = []
    for word in text.split(","):
        try:
            value = safe_load(word) if key != "pair" else word.strip()
        except yaml.YAMLError:
            value = word.strip()
        choices.append(value)
    return parse_dim(key, choices)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _range(key: str, low: Any, high: Any, log: bool) -> Dim:
    if not (_is_number(low) and _is_number(high)) or low >= high:
        raise FitnetsError(f"search space '{key}': a range needs numbers low < high, got "
                           f"{low!r} .. {high!r}.")
    if log and low <= 0:
        raise FitnetsError(f"search space '{key}': a log range needs low > 0, got {low!r}.")
    integer = isinstance(low, int) and isinstance(high, int)
    return Dim(key, low=low, high=high, log=log, integer=integer)


def _pair_text(value: Any) -> str:
    """A pair choice as GUIDED/HINT (from that text, or a [guided, hint] list)."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[0]}/{value[1]}"
    if isinstance(value, str) and value.count("/") == 1 and all(value.split("/")):
        return value
    raise FitnetsError(f"search space 'pair': each choice is GUIDED/HINT (a student layer and a "
                       f"teacher layer, as `fitnets layers --teacher T --student S` lists "
                       f"them), got {value!r}.")


def value_of(cfg: Config, key: str) -> Any:
    """The config's value of a dotted key (None where there is none)."""
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part, None)
    return value


def pair_rows(cfg: Config, top: int) -> list[dict]:
    """The pairs a derived space offers, as ``fitnets layers`` lists them: the recipe's own
    (its first hints.pairs entry, refused if its layers or regressor do not fit), then the
    ``top`` possible pairs nearest the middle of both networks (the default pair first)."""
    from fitnets.distill.suggest import top_pairs
    from fitnets.search.probe import nets_of

    nets = nets_of(cfg)
    ranked = nets.rows(cfg.hints.regressor)
    rows = top_pairs(ranked, top)
    own = recipe_pair(cfg) if cfg.hints.pairs else None
    if own is None:
        return rows
    g, h = own.split("/")
    where = f"the recipe's hint pair hints.pairs=[[{g}, {h}]]"
    row = next((r for r in ranked if (r["guided"], r["hint"]) == (g, h)), None)
    row = row or nets.row(g, h, cfg.hints.regressor, where)
    if not row["possible"]:
        raise FitnetsError(f"{where}: hints.regressor={cfg.hints.regressor} cannot map "
                           f"{row['guided_shape']} to {row['hint_shape']} ({row.get('error')}); "
                           "set hints.pairs to a pair both networks have, or hints.pairs=[] "
                           "to start from the models' default pair.")
    return ([row] + [r for r in rows if (r["guided"], r["hint"]) != (g, h)])[:max(top, 1)]


def derive_space(cfg: Config, top: int, pairs: list[str] | None = None, where: str = "pair",
                 ) -> tuple[dict[str, Dim], list[dict]]:
    """The searched keys the tool derives from what ``cfg``'s method offers
    (``fitnets.distill.methods``: each method's ``SEARCH``), and the pair rows.

    - a method with hint pairs: ``pair`` among ``pairs`` (GUIDED/HINT, given by ``where``;
      their layers are checked) or else :func:`pair_rows`, and the ``hints.regressor``
      kinds that fit every one of them (the recipe's own kind first);
    - each key the method offers, over its range (log; a relative range around the
      recipe's value).
    """
    from fitnets.distill.regressor import possible_kinds
    from fitnets.search.probe import nets_of

    offer = methods.offer(cfg.method)
    space: dict[str, Dim] = {}
    rows: list[dict] = []
    if offer.pairs:
        kind = cfg.hints.regressor
        rows = ([nets_of(cfg).row(*p.split("/"), kind, f"{where} '{p}'") for p in pairs]
                if pairs else pair_rows(cfg, top))
        if rows:
            space["pair"] = Dim("pair", choices=[f"{r['guided']}/{r['hint']}" for r in rows])
            common = [k for k in SEARCHED_KINDS
                      if all(r["guided_shape"] is not None
                             and k in possible_kinds(r["guided_shape"], r["hint_shape"])
                             for r in rows)]
            kinds = ([kind] if kind != "auto" else []) + [k for k in common if k != kind]
            if len(kinds) > 1:
                space["hints.regressor"] = Dim("hints.regressor", choices=kinds)
    for r in offer.ranges:
        low, high = r.low, r.high
        if r.relative:
            v = value_of(cfg, r.key)
            low, high = v / (1 / r.low), v * r.high
        space[r.key] = Dim(r.key, low=low, high=high, log=True)
    return space, rows


def build_space(cfg: Config, top: int, extra: dict[str, Any]) -> tuple[dict[str, Dim], list]:
    """The derived space, then the recipe's ``search.space``, then ``extra`` (--space): each
    entry adds a key, replaces one, or (None / empty) removes it. Pairs given there are
    checked against the models' layers; every key by building a config with each of its
    choices and bounds."""
    entries = {**cfg.search.space, **extra}
    dims = {key: parse_dim(key, value) for key, value in entries.items()}
    if dims.get("pair") is not None and not methods.offer(cfg.method).pairs:
        raise FitnetsError(f"--space pair=...: method={cfg.method} has no hint stage; use "
                           f"method={' or '.join(methods.offering_pairs())}.")
    given = dims["pair"].choices if dims.get("pair") is not None else None
    where = "--space pair" if "pair" in extra else "the recipe's search.space pair"
    space, rows = derive_space(cfg, top, given, where)
    for key, dim in dims.items():
        if dim is None:
            space.pop(key, None)
        else:
            space[key] = dim
    if not space:
        raise FitnetsError(f"nothing to search for method={cfg.method}: add keys with "
                           "--space KEY=CHOICES (e.g. --space train.optim.lr=1e-4:1e-2:log).")
    for dim in space.values():  # a typo in a key, or a value the config refuses, fails now
        for v in dim.corners():
            config_with(cfg, {dim.key: v}, {})
    return space, rows


def settings(params: dict[str, Any]) -> dict[str, Any]:
    """Searched values -> config keys (a pair is hints.pairs=[[guided, hint]])."""
    out = {}
    for key, value in params.items():
        if key == "pair":
            out["hints.pairs"] = [value.split("/")]
        else:
            out[key] = value
    return out


def config_with(base: Config, params: dict[str, Any], budget: dict[str, Any],
                out: str | None = None) -> Config:
    """A trial's config: ``base`` with the ``budget`` and the searched values."""
    values = {**budget, **settings(params), "out": out}
    return make_config(None, [], base=to_dict(base), settings=nest_dotted(values))


def recipe_values(cfg: Config, space: dict[str, Dim]) -> dict[str, Any]:
    """The recipe's own value of each searched key (the pair: its first hint pair, or the
    models' default), when the space holds it: the first trial."""
    values = {}
    for key, dim in space.items():
        value = recipe_pair(cfg) if key == "pair" else value_of(cfg, key)
        if value is not None and dim.contains(value):
            values[key] = value
    return values


def recipe_pair(cfg: Config) -> str | None:
    """The pair the recipe trains: its first hints.pairs entry, else the models' default."""
    if cfg.hints.pairs:
        return f"{cfg.hints.pairs[0][0]}/{cfg.hints.pairs[0][1]}"
    from fitnets.search.probe import nets_of

    try:
        row = next(r for r in nets_of(cfg).rows(cfg.hints.regressor) if r["default"])
    except (FitnetsError, StopIteration):
        return None
    return f"{row['guided']}/{row['hint']}"
