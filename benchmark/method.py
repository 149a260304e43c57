"""The method plugin protocol and the core that owns every invariant around it.

A plugin says *what to add and where* (:meth:`Method.attach`) and *which tensors it trains*
(:meth:`Method.trainable`). Everything that makes numbers comparable is done here, once:
:func:`prepare` freezes the backbone, creates the head, attaches the method, sets
``requires_grad`` from the declared set and counts parameters (shared tensors once).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from pebench import structure
from pebench.config import (
    Constraint,
    MethodConfigError,
    at_least_one,
    check_config,
    dropout_rate,
    option,
    parse_field,
    unknown_preset,
)
from pebench.vit import Dims, PetlModule, check_vit, vit_dims


@dataclass(frozen=True)
class Caps:
    """What a method claims; the conformance suite checks every claim.

    Attributes:
        identity_at_init: pre-logits equal the plain backbone's right after ``attach``.
        mergeable: :meth:`Method.merge` folds everything into backbone weights (on every
            backbone, unless :meth:`Method.mergeable_on` says otherwise for one).
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
            raise unknown_preset(preset, cls.name, cls.preset_names())
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

    def mergeable_on(self, model: nn.Module) -> bool:
        """Whether :meth:`merge` folds this method, attached to ``model``, into its weights.

        ``caps.mergeable`` by default; a method whose placement depends on the backbone (SSF on
        average-pool backbones) says so here, and the core counts its inference cost from it.
        """
        del model
        return self.caps.mergeable

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


# ------------------------------------------------------------------------------------ prepare --
class ContractError(ValueError):
    """A method broke the plugin contract (the message says what it did)."""


def head_names(model: nn.Module) -> set[str]:
    """Names of the classification head's parameters (the core's: never a method's)."""
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
    head = head_names(vit)
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
    if found := structure.problems(vit):
        raise ContractError(
            f"method {method.name!r}: the prepared model has " + "; ".join(found) + " (state "
            "and computation outside the counted tensors; see pebench.structure)"
        )
    added = sum(p.numel() for n, p in params.items() if id(p) not in backbone and n not in head)
    return ParamCount(
        method=sum(params[n].numel() for n in names),
        head=sum(params[n].numel() for n in head),
        backbone=sum(p.numel() for p in backbone.values()),
        inference_extra=0 if method.mergeable_on(vit) else added,
    )


def _host_copy(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` in host memory (a new tensor also when ``t`` is on the CPU)."""
    return t.detach().to("cpu", copy=True)


class Guard:
    """What :func:`prepare` fixed, checked again after a run trained and evaluated the model.

    A plugin cannot change the accounting behind the core's back: the trainable set (a flipped
    ``requires_grad``), the parameter and buffer names (renamed or added tensors), the frozen
    tensors (updated in place) and every buffer (learned state kept outside the parameters, which
    no count would see) must be exactly as they were after :func:`prepare`. Constant buffers
    (VeRA's random projections, OFT/BOFT index tables) are fine. Frozen tensors and buffers are
    compared bit for bit against a copy kept in host memory: a copy on a GPU would add the frozen
    backbone's size to the device memory of every frozen-backbone method (0.32 GiB on ViT-B) and
    nothing to full fine-tuning's, a method-dependent bias in the memory column.
    """

    def __init__(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        self.trainable = {n for n, p in params.items() if p.requires_grad}
        self.params = set(params)
        self.frozen = {n: _host_copy(p) for n, p in params.items() if not p.requires_grad}
        self.buffers = {n: _host_copy(b) for n, b in model.named_buffers()}

    def verify(self, model: nn.Module, method: str) -> None:
        """Raise :class:`ContractError` naming every change since construction."""
        params = dict(model.named_parameters())
        problems = []
        buffers = dict(model.named_buffers())
        if set(params) != self.params or set(buffers) != set(self.buffers):
            moved = sorted((set(params) ^ self.params) | (set(buffers) ^ set(self.buffers)))
            problems.append(f"renamed, added or removed tensors {moved[:4]}")
        flipped = sorted({n for n, p in params.items() if p.requires_grad} ^ self.trainable)
        if flipped:
            problems.append(f"changed requires_grad of {flipped[:4]} (the core sets it)")
        changed = [
            n for n, before in self.frozen.items()
            if n in params and not torch.equal(params[n].detach().cpu(), before)
        ]  # fmt: skip
        if changed:
            problems.append(
                f"changed frozen tensors in place: {changed[:4]} ({len(changed)} in all)"
            )
        learned = [
            n for n, b in buffers.items()
            if n in self.buffers and not torch.equal(b.detach().cpu(), self.buffers[n])
        ]  # fmt: skip
        if learned:
            problems.append(
                f"changed buffers during the run: {learned[:4]} "
                f"({sum(buffers[n].numel() for n in learned):,} values: state learned outside "
                "the parameters, which no parameter count sees)"
            )
        problems += [f"added {p}" for p in structure.problems(model)]
        if problems:
            raise ContractError(
                f"method {method!r} broke the plugin contract: " + "; ".join(problems)
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
    "ContractError",
    "Dims",
    "Guard",
    "Method",
    "MethodConfigError",
    "ParamCount",
    "at_least_one",
    "check_config",
    "dropout_rate",
    "head_names",
    "load_tunable_state_dict",
    "option",
    "prepare",
    "tunable_state_dict",
    "vit_dims",
]
