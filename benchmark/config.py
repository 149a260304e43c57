"""Method configs: declared field constraints, ``--set`` parsing and their error messages.

A method's ``Config`` is a frozen dataclass; its fields declare what they allow
(:func:`option`, :func:`at_least_one`, :func:`dropout_rate`, or a ``Literal`` annotation) and
:func:`check_config` enforces it. This module needs no torch, so the CLI can refuse an unknown
preset or ``--set`` key of a built-in method from the method catalog before any model exists,
with the same messages :meth:`pebench.method.Method.build` gives.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from pebench.errors import PebenchError


class MethodConfigError(PebenchError, ValueError):
    """A bad preset, ``--set`` key or value. The message names it and what is allowed."""


_CONSTRAINT = "pebench.constraint"


@dataclass(frozen=True)
class Constraint:
    """What a Config field allows: bounds and/or a set of choices (see :func:`option`)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None

    def allows(self, value: Any) -> bool:
        """Whether ``value`` satisfies every bound and is one of the choices (NaN never is)."""
        if self.choices is not None and value not in self.choices:
            return False
        bounds = (
            (self.ge, lambda b: value >= b),
            (self.gt, lambda b: value > b),
            (self.le, lambda b: value <= b),
            (self.lt, lambda b: value < b),
        )
        try:
            return all(b is None or ok(b) for b, ok in bounds)
        except TypeError:  # e.g. a string where a number is expected
            return False

    def describe(self) -> str:
        """``">= 1"``, ``"in [0, 1)"``, ``"one of 'a', 'b'"`` (what the error message shows)."""
        parts = []
        if self.choices is not None:
            parts.append("one of " + ", ".join(repr(c) for c in self.choices))
        lo = f"[{self.ge:g}" if self.ge is not None else None
        lo = f"({self.gt:g}" if self.gt is not None else lo
        hi = f"{self.le:g}]" if self.le is not None else None
        hi = f"{self.lt:g})" if self.lt is not None else hi
        if lo and hi:
            parts.append(f"in {lo}, {hi}")
        else:
            ops = ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
            parts += [f"{op} {bound:g}" for op, bound in ops if bound is not None]
        return " and ".join(parts)


def option(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A Config field with a default and a declared :class:`Constraint`.

    ``r: int = option(8, ge=1)``; ``dropout: float = option(0.1, ge=0, lt=1)``;
    ``act: str = option("gelu", choices=("relu", "gelu"))``. ``Literal[...]`` fields need no
    ``option``: their choices are checked from the annotation.
    """
    rule = Constraint(ge=ge, gt=gt, le=le, lt=lt, choices=choices)
    return dataclasses.field(default=default, metadata={_CONSTRAINT: rule})


def at_least_one(default: int) -> Any:
    """An integer field that must be >= 1 (ranks, bottlenecks, token counts)."""
    return option(default, ge=1)


def dropout_rate(default: float) -> Any:
    """A dropout probability field: in [0, 1)."""
    return option(default, ge=0.0, lt=1.0)


def field_constraints(config_cls: type) -> dict[str, Constraint]:
    """Field name -> :class:`Constraint`: declared with :func:`option`, or a ``Literal``'s."""
    rules, types = {}, config_fields(config_cls)
    for f in dataclasses.fields(config_cls):
        rule = f.metadata.get(_CONSTRAINT)
        if rule is None and get_origin(tp := types[f.name]) is Literal:
            rule = Constraint(choices=get_args(tp))
        if rule is not None:
            rules[f.name] = rule
    return rules


def check_config(config: Any) -> None:
    """Check every field of a Config instance against its :func:`field_constraints`.

    Raises:
        MethodConfigError: ``"<key> must be <allowed>, got <value>"`` for the first bad field.
    """
    for name, rule in field_constraints(type(config)).items():
        value = getattr(config, name)
        if not rule.allows(value):
            raise MethodConfigError(f"{name} must be {rule.describe()}, got {value!r}")


# ------------------------------------------------------------------------------- config parse --
def config_fields(config_cls: type) -> dict[str, Any]:
    """Field name -> resolved type of a Config dataclass."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def type_name(tp: Any) -> str:
    """A field type as users read it: ``int``, or the choices of a ``Literal``."""
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def parse_field(config_cls: type, key: str, value: Any) -> Any:
    """Parse ``value`` for field ``key`` of ``config_cls`` (strings come from ``--set``).

    Raises:
        MethodConfigError: unknown key (lists the fields) or a value of the wrong type.
    """
    fields = config_fields(config_cls)
    if key not in fields:
        raise unknown_key(key, field_types(config_cls))
    tp = fields[key]
    if not isinstance(value, str):
        return value
    try:
        if get_origin(tp) is Literal:
            for choice in get_args(tp):
                if str(choice) == value:
                    return choice
            raise ValueError
        if tp is bool:
            low = value.lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError
        if tp in (int, float, str):
            return tp(value)
        return json.loads(value)
    except ValueError as err:
        raise MethodConfigError(
            f"bad value {value!r} for config key {key!r}: expected {type_name(tp)}"
        ) from err


def field_types(config_cls: type) -> dict[str, str]:
    """Field name -> type as shown to users (``int``, ``'qv' | 'noah_qkv'``)."""
    return {k: type_name(t) for k, t in config_fields(config_cls).items()}


def unknown_key(key: str, fields: Mapping[str, str]) -> MethodConfigError:
    """The error for a ``--set`` key a Config does not have (lists the allowed fields)."""
    allowed = ", ".join(f"{k}: {t}" for k, t in fields.items()) or "(none)"
    return MethodConfigError(f"unknown config key {key!r}; allowed fields: {allowed}")


def unknown_preset(preset: str, method: str, presets: Iterable[str]) -> MethodConfigError:
    """The error for a preset a method does not have (lists its presets)."""
    return MethodConfigError(
        f"unknown preset {preset!r} for method {method!r}; presets: {', '.join(presets)}"
    )


__all__ = [
    "Constraint",
    "MethodConfigError",
    "at_least_one",
    "check_config",
    "config_fields",
    "dropout_rate",
    "field_constraints",
    "field_types",
    "option",
    "parse_field",
    "type_name",
    "unknown_key",
    "unknown_preset",
]
