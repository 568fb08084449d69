"""Config text: YAML recipes and ``key.sub=value`` overrides, read into nested dicts.

What comes out is plain YAML data; fitnets.config types it against its dataclasses and
checks it. A scalar override keeps the text it was typed as (``Typed``), so a key that takes a
string gets ``no``, not False.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from fitnets.errors import FitnetsError

# config keys whose values are mappings of user data (patterns, dotted keys): a recipe or
# override replaces them whole instead of merging them (and their keys are not config keys)
FREE_MAPPINGS = ("max_norm", "lr_scale", "budget", "space")


class _Loader(yaml.SafeLoader):
    """safe_load, plus floats such as 1e-3 that YAML 1.1 would read as strings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def safe_load(text: str) -> Any:
    """YAML ``text`` read as the config reads it (safe_load, plus floats such as 1e-3)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


@dataclasses.dataclass(frozen=True)
class Typed:
    """A scalar override as YAML read it (``value``) and as it was typed (``text``): a
    string key takes the text, so ``out=no`` names the folder ``no``, not False."""

    value: Any
    text: str


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` -> (["a", "b"], 3): the value is read as YAML (numbers, lists, null); a
    number or boolean keeps the text it was typed as (``Typed``), for keys that take a
    string."""
    if "=" not in text:
        raise FitnetsError(
            f"cannot read the override '{text}': expected key=value, e.g. train.epochs=5."
        )
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise FitnetsError(f"cannot read the override '{text}': the key is empty.")
    try:
        value = safe_load(raw) if raw.strip() else ""
        if isinstance(value, (bool, int, float)):
            value = Typed(value, raw.strip())
    except yaml.YAMLError as e:
        hint = (" Layer names with [INDEX] or :KEY must be quoted inside the list, e.g. "
                "hints.pairs='[[\"blocks.5[0]\", \"encoder:last_hidden_state\"]]'."
                if re.search(r"\w\[\d+\]|\w:\w", raw) else "")
        raise FitnetsError(f"cannot read the value of override '{text}': "
                           f"{' '.join(str(e).split())}.{hint}") from None
    return key.split("."), value


def nest(path: list[str], value: Any) -> dict:
    """``(["a", "b"], 3)`` -> ``{"a": {"b": 3}}``."""
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


def parse_overrides(texts: list[str]) -> dict[str, Any]:
    """``["a.b=3", "c=x"]`` -> ``{"a.b": 3, "c": "x"}``: each value read as YAML."""
    out = {}
    for text in texts:
        path, value = parse_override(text)
        out[".".join(path)] = value.value if isinstance(value, Typed) else value
    return out


def nest_dotted(values: dict[str, Any]) -> dict:
    """``{"a.b": 1, "a.c": 2}`` -> ``{"a": {"b": 1, "c": 2}}`` (settings for make_config)."""
    out: dict = {}
    for key, value in values.items():
        out = deep_merge(out, nest(key.split("."), value))
    return out


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` updated by ``update``, section by section (FREE_MAPPINGS replaced whole)."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in FREE_MAPPINGS:
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_yaml(path: str | Path) -> dict:
    """A recipe file's mapping, or a FitnetsError saying what is wrong with the file."""
    p = Path(path)
    if not p.is_file():
        raise FitnetsError(f"recipe '{path}' does not exist (or is not a file).")
    try:
        data = safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise FitnetsError(f"recipe '{path}' is not valid YAML: {e}") from None
    except UnicodeDecodeError:
        raise FitnetsError(f"recipe '{path}' is not a text file.") from None
    if not isinstance(data, dict):
        raise FitnetsError(f"recipe '{path}' must be a mapping of keys to values at the top.")
    return data
