"""The method plugin protocol and the core that owns every invariant around it.

A plugin says *what to add and where* (:meth:`Method.attach`) and *which tensors it trains*
(:meth:`Method.trainable`). Everything that makes numbers comparable is done here, once:
:func:`prepare` freezes the backbone, creates the head, attaches the method, sets
``requires_grad`` from the declared set and counts parameters (shared tensors once).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args, get_origin

import torch
from torch import nn

from pebench.errors import PebenchError
from pebench.vit import Dims, PetlModule, check_vit, vit_dims


class MethodConfigError(PebenchError, ValueError):
    """A bad preset, ``--set`` key or value. The message names it and what is allowed."""


@dataclass(frozen=True)
class Caps:
    """What a method claims; the conformance suite checks every claim.

    Attributes:
        identity_at_init: pre-logits equal the plain backbone's right after ``attach``.
        mergeable: :meth:`Method.merge` folds everything into backbone weights.
        unfreezes_backbone: the trainable set contains backbone parameters (BitFit, full).
    """

    identity_at_init: bool = True
    mergeable: bool = False
    unfreezes_backbone: bool = False


@dataclass(frozen=True)
class ParamCount:
    """Parameter accounting of a prepared model (shared tensors counted once).

    Attributes:
        method: trainable parameters excluding the head (pebench's headline number).
        head: parameters of the classification head.
        backbone: parameters of the backbone without head (frozen or not).
        inference_extra: parameters the deployed model has beyond backbone + head
            (0 for mergeable and in-place methods).
    """

    method: int
    head: int
    backbone: int
    inference_extra: int

    def as_dict(self) -> dict[str, int]:
        """Row-style keys: ``params_method``, ``params_head``, ..."""
        return {f"params_{k}": v for k, v in dataclasses.asdict(self).items()}


class Method:
    """Base class of method plugins.

    Subclasses set ``name``, ``title``, ``paper_url``, ``caps``, a frozen ``Config`` dataclass and
    ``presets`` (name -> field overrides; ``"default"`` is ``Config()`` plus
    ``presets.get("default", {})``), and implement :meth:`attach` and
    :meth:`expected_num_params`. They never call ``requires_grad_`` and never count parameters.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    paper_url: ClassVar[str] = ""
    code_url: ClassVar[str] = ""
    reconstruction: ClassVar[bool] = False
    caps: ClassVar[Caps] = Caps()
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    @dataclass(frozen=True)
    class Config:
        """No options. Base of every method's Config: construction runs :func:`check_config`."""

        def __post_init__(self) -> None:
            check_config(self)

    def __init__(self, config: Any | None = None, preset: str = "default"):
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, Method.Config):  # a Config that is not derived from ours
            check_config(self.config)
        self.preset = preset

    # ------------------------------------------------------------------------- construction --
    @classmethod
    def preset_names(cls) -> list[str]:
        """``"default"`` followed by the other presets."""
        return ["default"] + sorted(p for p in cls.presets if p != "default")

    @classmethod
    def build(cls, preset: str | None = None, overrides: Mapping[str, Any] | None = None) -> Method:
        """Instantiate from a preset and ``key -> value`` overrides (strings are parsed).

        Raises:
            MethodConfigError: unknown preset, unknown key or bad value.
        """
        preset = preset or "default"
        if preset not in cls.preset_names():
            raise MethodConfigError(
                f"unknown preset {preset!r} for method {cls.name!r}; presets: "
                f"{', '.join(cls.preset_names())}"
            )
        values = dict(cls.presets.get(preset, {}))
        values.update({k: parse_field(cls.Config, k, v) for k, v in (overrides or {}).items()})
        try:
            config = cls.Config(**values)  # a Method.Config checks itself on construction
            if not isinstance(config, Method.Config):
                check_config(config)
        except (TypeError, ValueError) as err:
            raise MethodConfigError(f"invalid config for method {cls.name!r}: {err}") from err
        return cls(config, preset=preset)

    def config_json(self) -> str:
        """The config as canonical JSON (sorted keys), part of every run identity."""
        return json.dumps(dataclasses.asdict(self.config), sort_keys=True)

    def describe(self) -> dict[str, Any]:
        """Metadata shown by ``pebench list methods`` and stored with results."""
        return {
            "name": self.name,
            "title": self.title,
            "paper_url": self.paper_url,
            "reconstruction": self.reconstruction,
            "caps": dataclasses.asdict(self.caps),
            "presets": self.preset_names(),
        }

    # ------------------------------------------------------------------------------ protocol --
    def attach(self, model: nn.Module) -> nn.Module:
        """Add this method's modules to ``model`` in place and return it."""
        raise NotImplementedError

    def trainable(self, model: nn.Module) -> set[str]:
        """Exact names of the parameters this method trains (head excluded).

        Default: every parameter owned by a :class:`~pebench.vit.PetlModule`, found by type.
        """
        prefixes = [n for n, m in model.named_modules() if isinstance(m, PetlModule)]
        names = set()
        for pname, _ in model.named_parameters():
            if any(pname.startswith(p + ".") for p in prefixes):
                names.add(pname)
        return names

    def expected_num_params(self, dims: Dims) -> int:
        """Closed-form trainable parameter count (head excluded) from the paper."""
        raise NotImplementedError

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold the trained method into the backbone weights (only where ``caps.mergeable``)."""
        raise NotImplementedError(f"method {self.name!r} is not mergeable")

    def backbone_key(self, key: str, model: nn.Module) -> str:
        """Where backbone state-dict entry ``key`` lives after :meth:`attach`.

        pebench's own methods never rename backbone keys (identity). Wrappers from other
        libraries may (peft moves ``qkv.weight`` to ``qkv.base_layer.weight``); the conformance
        suite uses this mapping to check that every backbone tensor is still there, unchanged.
        """
        return key


# -------------------------------------------------------------------------- config checks --
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


def _type_name(tp: Any) -> str:
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
        allowed = ", ".join(f"{k}: {_type_name(t)}" for k, t in fields.items()) or "(none)"
        raise MethodConfigError(f"unknown config key {key!r}; allowed fields: {allowed}")
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
            f"bad value {value!r} for config key {key!r}: expected {_type_name(tp)}"
        ) from err


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """Turn ``["r=8", "scale=0.1"]`` into a dict; malformed items raise."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MethodConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


# ------------------------------------------------------------------------------------ prepare --
def _head_names(model: nn.Module) -> set[str]:
    head = check_vit(model).get_classifier()
    prefix = next(n for n, m in model.named_modules() if m is head)
    return {f"{prefix}.{n}" for n, _ in head.named_parameters()}


def prepare(model: nn.Module, method: Method, num_classes: int) -> ParamCount:
    """Freeze ``model``, give it a fresh head, attach ``method`` and set trainability.

    The only place in pebench that touches ``requires_grad``.

    Raises:
        pebench.vit.NotAViTError: ``model`` is not a timm ViT.
        ValueError: the method's declared trainable set is inconsistent with the model or caps.
    """
    vit = check_vit(model)
    vit.reset_classifier(num_classes)
    head = _head_names(vit)
    # backbone tensors are tracked by identity: a wrapper may move them to new names
    backbone = {id(p): p for n, p in vit.named_parameters() if n not in head}
    vit.requires_grad_(False)
    if method.attach(vit) is not vit:
        raise ValueError(f"method {method.name!r}: attach() must modify the model in place")
    params = dict(vit.named_parameters())
    names = set(method.trainable(vit))
    if unknown := names - params.keys():
        raise ValueError(
            f"method {method.name!r} declares unknown parameters {sorted(unknown)[:5]}"
        )
    if names & head:
        raise ValueError(f"method {method.name!r} must not declare head parameters (core owns it)")
    stray = sorted(n for n in names if id(params[n]) in backbone)
    if stray and not method.caps.unfreezes_backbone:
        raise ValueError(
            f"method {method.name!r} trains backbone parameters {stray[:3]} "
            "but caps.unfreezes_backbone is False"
        )
    for n, p in params.items():
        p.requires_grad_(n in names or n in head)
    added = sum(p.numel() for n, p in params.items() if id(p) not in backbone and n not in head)
    return ParamCount(
        method=sum(params[n].numel() for n in names),
        head=sum(params[n].numel() for n in head),
        backbone=sum(p.numel() for p in backbone.values()),
        inference_extra=0 if method.caps.mergeable else added,
    )


def tunable_names(model: nn.Module) -> list[str]:
    """Names of the parameters that train (method + head), in model order."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def tunable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only what training changed: the method's tensors and the head (detached clones)."""
    names = set(tunable_names(model))
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in names}


def load_tunable_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load a :func:`tunable_state_dict` into a model prepared with the same method.

    Raises:
        KeyError: the keys differ from the model's trainable set (names the difference).
    """
    expected = set(tunable_names(model))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise KeyError(f"tunable state mismatch: missing {missing[:5]}, unexpected {extra[:5]}")
    model.load_state_dict(dict(state), strict=False)


__all__ = [
    "Caps",
    "Constraint",
    "Dims",
    "Method",
    "MethodConfigError",
    "ParamCount",
    "at_least_one",
    "check_config",
    "dropout_rate",
    "load_tunable_state_dict",
    "option",
    "parse_overrides",
    "prepare",
    "tunable_state_dict",
    "vit_dims",
]
