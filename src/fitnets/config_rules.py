"""Constraints declared beside the config's fields, and checked when a config is read.

A key whose values have a range, or another rule of its own, says so where it is defined::

    lr: float = checked(0.0005, gt(0))
    momentum: float = checked(0.0, in_range(0, 1, closed="left"))

``check_rules`` tests every declared rule of a config tree, with errors that name the full
key ('train.optim.lr'), the rule and the value given; ``fitnets config --doc`` prints each rule
beside its key. The checks that involve several keys stay in ``fitnets.config.validate``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import typing
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from fitnets.errors import FitnetsError


@dataclasses.dataclass(frozen=True)
class Rule:
    """A constraint on one config value. ``text`` completes "must be ..."; ``outside(step)``
    gives values just outside it (``step``: 1 for integers), for the tests; ``each``: the rule
    holds for every item of a list (key[i]) or every value of a mapping (key.name)."""

    text: str
    ok: Callable[[Any], bool]
    outside: Callable[[float], tuple]
    each: bool = False

    def __str__(self) -> str:
        return ("each " if self.each else "") + self.text

    def check(self, key: str, value: Any) -> None:
        """Raise a FitnetsError naming ``key``, the rule and ``value`` unless it holds. A null
        passes: whether a key may be null is its type's business."""
        if value is None:
            return
        if self.each:
            items = value.items() if isinstance(value, dict) else enumerate(value)
            one = dataclasses.replace(self, each=False)
            for k, v in items:
                one.check(f"{key}.{k}" if isinstance(value, dict) else f"{key}[{k}]", v)
        elif not self.ok(value):
            raise FitnetsError(f"config key '{key}' must be {self.text}, got {value!r}.")


def in_range(lo: float | None = None, hi: float | None = None, closed: str = "both") -> Rule:
    """``lo <= x <= hi``; ``closed`` (both, left, right, neither) says which ends are allowed
    values; a missing end is unbounded."""
    if closed not in ("both", "left", "right", "neither"):
        raise ValueError(f"closed must be both, left, right or neither, got {closed!r}")
    lo_in, hi_in = closed in ("both", "left"), closed in ("both", "right")

    def ok(x: float) -> bool:
        return ((lo is None or (x >= lo if lo_in else x > lo))
                and (hi is None or (x <= hi if hi_in else x < hi)))

    if hi is None:
        text = f"{'>=' if lo_in else '>'} {lo}"
    elif lo is None:
        text = f"{'<=' if hi_in else '<'} {hi}"
    else:
        text = f"in {'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"
    return Rule(text, ok, lambda step: tuple(
        end + sign * step * inside for end, sign, inside in ((lo, -1, lo_in), (hi, 1, hi_in))
        if end is not None))


def ge(lo: float) -> Rule:
    """``x >= lo``."""
    return in_range(lo, closed="left")


def gt(lo: float) -> Rule:
    """``x > lo``."""
    return in_range(lo, closed="neither")


def rule(text: str, ok: Callable[[Any], bool], *outside: Any) -> Rule:
    """A rule beyond a range: ``ok`` tests a value, ``outside`` are values that fail it."""
    return Rule(text, ok, lambda step: outside)


def each(one: Rule) -> Rule:
    """``one`` for every item of a list or every value of a mapping."""
    return dataclasses.replace(one, each=True)


def checked(default: Any, constraint: Rule) -> Any:
    """A dataclass field with ``default`` (a list or mapping is copied for each instance) whose
    values must satisfy ``constraint``."""
    meta = {"rule": constraint}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Declared(NamedTuple):
    """One declared rule of a config tree: the full key, its rule, value and field type."""

    key: str
    rule: Rule
    value: Any
    type: Any


def declared_rules(obj: Any, prefix: str = "") -> Iterator[Declared]:
    """Every declared rule in the dataclass tree ``obj`` (e.g. a Config), with its full key."""
    hints = _field_types(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from declared_rules(value, f"{prefix}{f.name}.")
        elif "rule" in f.metadata:
            yield Declared(prefix + f.name, f.metadata["rule"], value, hints[f.name])


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_rules(obj: Any) -> None:
    """Raise a FitnetsError for the first value of ``obj``'s tree that breaks its rule."""
    for d in declared_rules(obj):
        d.rule.check(d.key, d.value)
