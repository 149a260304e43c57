"""Method plugins: one file per method, listed lazily in :data:`BUILTIN`.

Third-party packages register through the entry-point group ``pebench.methods``::

    [project.entry-points."pebench.methods"]
    my_method = "my_package.my_method:MyMethod"
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any

from typing_extensions import override

from pebench.registry import Registry, check_named_subclass

if TYPE_CHECKING:
    from pebench.method import Method

BUILTIN: dict[str, str] = {
    "linear": "pebench.methods.linear:Linear",
    "full": "pebench.methods.full:Full",
    "bitfit": "pebench.methods.bitfit:BitFit",
    "lora": "pebench.methods.lora:LoRA",
    # the five target methods
    "adaptformer": "pebench.methods.adaptformer:AdaptFormer",
    "arc": "pebench.methods.arc:ARC",
    "arc_att": "pebench.methods.arc:ARCAtt",
    "padapter": "pebench.methods.padapter:PAdapter",
    "kadaptation": "pebench.methods.kadaptation:KAdaptation",
    "lv_adapter": "pebench.methods.lv_adapter:LvAdapter",
    # baselines
    "ln_tune": "pebench.methods.ln_tune:LNTune",
    "ssf": "pebench.methods.ssf:SSF",
    "vpt_shallow": "pebench.methods.vpt:VPTShallow",
    "vpt_deep": "pebench.methods.vpt:VPTDeep",
    "adapter_houlsby": "pebench.methods.adapters:HoulsbyAdapter",
    "adapter_pfeiffer": "pebench.methods.adapters:PfeifferAdapter",
    "convpass": "pebench.methods.convpass:Convpass",
    "repadapter": "pebench.methods.repadapter:RepAdapter",
    "fact_tt": "pebench.methods.fact:FacTTT",
    "fact_tk": "pebench.methods.fact:FacTTK",
}

PEFT_PREFIX = "peft:"


class MethodRegistry(Registry["type[Method]"]):
    """The method registry; ``peft:<type>`` names resolve on first use through the peft bridge."""

    def get(self, name: str) -> type[Method]:
        """Return the class for ``name``; ``peft:*`` names are built (and registered) lazily."""
        if name.startswith(PEFT_PREFIX) and name not in self._loaded:
            from pebench.methods.peft_bridge import peft_method_class, peft_origin

            self.register(name, peft_method_class(name), origin=peft_origin())
        return super().get(name)

    @override
    def check(self, name: str, obj: object, source: str) -> None:
        """A method entry must be a :class:`~pebench.method.Method` subclass named ``name``.

        Raises:
            RegistryError: one line naming the entry, what it points to and what is allowed.
        """
        from pebench.method import Method

        check_named_subclass(obj, Method, name, source)


registry: MethodRegistry = MethodRegistry("method", BUILTIN, group="pebench.methods")


def peft_method_names() -> list[str]:
    """``peft:<type>`` names usable with the installed peft (empty without peft)."""
    from pebench.methods.peft_bridge import available_peft_types

    return [PEFT_PREFIX + t for t in available_peft_types()]


def builtin_catalog() -> list[dict[str, Any]]:
    """``describe()`` + ``"origin": "builtin"`` of every built-in method, without importing torch.

    Read from the committed ``catalog.json`` (regenerate with ``python -m pebench.method_catalog``;
    a test keeps it equal to the live classes).
    """
    text = resources.files(__name__).joinpath("catalog.json").read_text(encoding="utf-8")
    return json.loads(text)


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"lora.noah_qkv"`` -> ``("lora", "noah_qkv")``; ``"lora"`` -> ``("lora", None)``."""
    name, _, preset = spec.partition(".")
    return name, preset or None


def get_method_class(name: str) -> type[Method]:
    """The registered class for ``name`` (unknown names raise with suggestions).

    Raises:
        RegistryError: unknown name, or an entry that is not a ``Method`` subclass named ``name``.
    """
    return registry.get(name)


def build_method(
    spec: str, overrides: dict[str, Any] | None = None, preset: str | None = None
) -> Method:
    """Instantiate ``"name[.preset]"`` with ``--set``-style overrides."""
    name, spec_preset = split_spec(spec)
    return get_method_class(name).build(preset or spec_preset, overrides)
