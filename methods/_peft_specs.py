"""Parameter formulas, defaults and config building of the peft bridge's tuner types.

Split out of :mod:`pebench.methods.peft_bridge` (which imports everything public from here):
per-type closed-form counts (:data:`SPECS`), the ``--set``-able Config dataclass made from a peft
config class (:func:`make_config`) and the peft config built from it (:func:`build_peft_config`).
Nothing here imports peft: callers pass the bridge's peft API namespace.
"""

from __future__ import annotations

import dataclasses
import math
import types
import warnings
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

BRIDGE = "pebench.methods.peft_bridge"  # where the generated classes say they live
BLOCK_LINEARS = {"qkv": "attn", "proj": "attn", "fc1": "mlp", "fc2": "mlp"}
# peft config fields never exposed: housekeeping, or meaningless/unsafe on a timm ViT
_HIDDEN = {
    "target_modules", "exclude_modules", "feedforward_modules", "fan_in_fan_out", "bias",
    "modules_to_save", "layers_to_transform", "layers_pattern", "megatron_core", "use_qalora",
    "qalora_group_size", "ensure_weight_tying",
}  # fmt: skip


# ------------------------------------------------------------------------ parameter formulas --
def factor_pair(n: int, factor: int) -> tuple[int, int]:
    """LoKr's split of ``n`` into ``(a, n/a)``.

    ``a = factor`` if it divides ``n``, else the largest divisor with ``a² ≤ n`` and
    ``a ≤ factor`` (no bound for ``factor = -1``; 1 if there is none).
    """
    if factor > 0 and n % factor == 0:
        return factor, n // factor
    limit = n if factor == -1 else factor
    a = max([d for d in range(1, math.isqrt(n) + 1) if n % d == 0 and d <= limit] or [1])
    return a, n // a


def _lokr(c: Any, i: int, o: int, ff: bool) -> int:
    """ΔW = W1 ⊗ W2 with W1 (o1×i1), W2 (o2×i2); a factor is low-rank (r) when r < max/2."""
    (o1, o2), (i1, i2) = factor_pair(o, c.decompose_factor), factor_pair(i, c.decompose_factor)
    w1 = c.r * (o1 + i1) if c.decompose_both and c.r < max(o1, i1) / 2 else o1 * i1
    w2 = c.r * (o2 + i2) if c.r < max(o2, i2) / 2 else o2 * i2
    return w1 + w2


def _oft_block(c: Any, i: int) -> int:
    return c.oft_block_size if c.r == 0 else i // c.r


def _check_oft(c: Any, name: str, i: int) -> None:
    b = c.oft_block_size if c.r == 0 else c.r
    if i % b:
        what = "oft_block_size" if c.r == 0 else "r"
        raise ValueError(f"peft:oft: {what}={b} does not divide in_features {i} of {name}")


@dataclasses.dataclass(frozen=True)
class Spec:
    """What pebench knows about one peft type.

    Attributes:
        per_layer: closed-form count per adapted Linear ``(config, in, out, feedforward)``.
        defaults: pebench's defaults where they differ from peft's.
        fixed: values passed to peft but not exposed to ``--set``.
        hide: peft fields not exposed.
        check: ``(config, layer name, in_features)`` raising ``ValueError`` where peft would
            silently adjust.
        paper_url: the paper.
        mergeable: peft's merge folds the tuner exactly into the base Linear.
    """

    per_layer: Callable[[Any, int, int, bool], int] | None = None
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)  # pebench's defaults
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)  # passed, not exposed
    hide: frozenset[str] = frozenset()
    check: Callable[[Any, str, int], None] | None = None
    paper_url: str = ""
    mergeable: bool = True


_ADALORA_SCHEDULE = {"r", "target_r", "tinit", "tfinal", "deltaT", "beta1", "beta2", "total_step"}
SPECS: dict[str, Spec] = {
    "lora": Spec(
        lambda c, i, o, ff: c.r * (i + o) + o * (getattr(c, "lora_bias", 0) + c.use_dora),
        paper_url="https://arxiv.org/abs/2106.09685",
    ),
    "adalora": Spec(
        lambda c, i, o, ff: c.init_r * (i + o + 1),
        fixed={"total_step": 1},
        hide=frozenset(_ADALORA_SCHEDULE | {"orth_reg_weight", "use_dora", "lora_bias"}),
        paper_url="https://arxiv.org/abs/2303.10512",
    ),
    "loha": Spec(
        lambda c, i, o, ff: 2 * c.r * (i + o), paper_url="https://arxiv.org/abs/2108.06098"
    ),
    "lokr": Spec(_lokr, paper_url="https://arxiv.org/abs/2309.14859"),
    "ia3": Spec(
        lambda c, i, o, ff: i if ff else o,
        defaults={"target_modules": "qkv,fc2", "feedforward_modules": "fc2"},
        paper_url="https://arxiv.org/abs/2205.05638",
    ),
    "vera": Spec(lambda c, i, o, ff: o + c.r, paper_url="https://arxiv.org/abs/2310.11454"),
    "boft": Spec(
        lambda c, i, o, ff: i * (c.boft_block_size or i // c.boft_block_num) + o,
        hide=frozenset({"boft_n_butterfly_factor"}),
        paper_url="https://arxiv.org/abs/2311.06243",
    ),
    "oft": Spec(
        lambda c, i, o, ff: (
            (1 if c.block_share else i // _oft_block(c, i))
            * (_oft_block(c, i) * (_oft_block(c, i) - 1) // 2)
        ),
        check=_check_oft,
        paper_url="https://arxiv.org/abs/2306.07280",
    ),
    "hra": Spec(lambda c, i, o, ff: i * c.r, paper_url="https://arxiv.org/abs/2405.17484"),
}
# types without a closed form that need a default other than peft's to fit D=64 and D=768
_GENERIC_DEFAULTS = {"c3a": {"block_size": 64}, "vblora": {"vector_length": 64}}


# ------------------------------------------------------------------------------- the config --
def split_targets(value: Any) -> tuple[str, ...]:
    """``"qkv, fc2"`` or ``["qkv", "fc2"]`` -> ``("qkv", "fc2")`` (blanks dropped)."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    return tuple(s.strip() for s in items if s.strip())


def _regex(names: tuple[str, ...]) -> str:
    alts = "|".join(f"{BLOCK_LINEARS[n]}\\.{n}" for n in names)
    return rf"blocks\.\d+\.(?:{alts})"


def _cli_type(hint: Any, default: Any) -> Any:
    """The ``--set``-parsable type for a peft field, or ``None`` if it has none."""
    if hint in (int, float, bool, str):
        return hint
    args = get_args(hint)
    if get_origin(hint) is Literal and all(isinstance(a, int | float | str) for a in args):
        return hint
    if get_origin(hint) in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and default is not None:
            return _cli_type(rest[0], default)
        if bool in rest and all(a is bool or get_origin(a) is Literal for a in rest):
            lits = [x for a in rest if a is not bool for x in get_args(a)]
            return Literal[(True, False, *lits)]
    return None


def make_config(peft: Any, key: str, peft_cls: type, spec: Spec) -> type:
    """The frozen Config dataclass of ``peft:<key>``: the ``--set``-parsable fields of ``peft_cls``.

    ``peft`` is the bridge's peft API namespace; construction validates through peft itself.
    """
    hints = get_type_hints(peft_cls)
    base = {f.name for f in dataclasses.fields(peft.PeftConfig)}
    defaults = {"target_modules": "qkv", **_GENERIC_DEFAULTS.get(key, {}), **spec.defaults}
    fields: list[tuple[str, Any, Any]] = [("target_modules", str, defaults["target_modules"])]
    if "feedforward_modules" in defaults:
        fields.append(("feedforward_modules", str, defaults["feedforward_modules"]))
    for f in dataclasses.fields(peft_cls):
        if f.name in base or f.name in _HIDDEN or f.name in spec.hide or f.name in spec.fixed:
            continue
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        default = defaults.get(f.name, default)
        tp = _cli_type(hints[f.name], default)
        if tp is not None and default is not dataclasses.MISSING and default is not None:
            fields.append((f.name, tp, default))

    def __post_init__(self: Any) -> None:
        for name in ("target_modules", "feedforward_modules"):
            if hasattr(self, name):
                value = split_targets(getattr(self, name))
                if bad := [n for n in value if n not in BLOCK_LINEARS]:
                    raise ValueError(
                        f"{name}: unknown {bad}; use block Linear names {sorted(BLOCK_LINEARS)}"
                    )
                object.__setattr__(self, name, ",".join(value))
        if not self.target_modules:
            raise ValueError("target_modules is empty")
        ff = split_targets(getattr(self, "feedforward_modules", ""))
        if not set(ff) <= set(split_targets(self.target_modules)):
            raise ValueError("feedforward_modules must be a subset of target_modules")
        build_peft_config(peft, key, self)  # peft's own validation, as ValueError

    doc = f"peft {peft_cls.__name__} fields settable with --set (pebench defaults: {defaults})."
    return dataclasses.make_dataclass(
        "Config",
        [(n, t, dataclasses.field(default=d)) for n, t, d in fields],
        namespace={
            "__post_init__": __post_init__,
            "__doc__": doc,
            "__module__": "pebench.methods.peft_bridge",
        },
        frozen=True,
    )


def build_peft_config(peft: Any, key: str, cfg: Any) -> Any:
    """The peft ``PeftConfig`` for Config instance ``cfg`` of ``peft:<key>``."""
    peft_type = peft.PeftType[key.upper()]
    kwargs = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    kwargs["target_modules"] = _regex(split_targets(cfg.target_modules))
    if "feedforward_modules" in kwargs:
        ff = split_targets(cfg.feedforward_modules)
        kwargs["feedforward_modules"] = _regex(ff) if ff else []
    kwargs.update(SPECS.get(key, Spec()).fixed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.configs[peft_type](**kwargs)
