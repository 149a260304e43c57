"""Hugging Face peft bridge: ``--method peft:<type>`` runs a peft tuner on a timm ViT.

*PEFT: State-of-the-art Parameter-Efficient Fine-Tuning methods* (Hugging Face)
https://huggingface.co/docs/peft — code: https://github.com/huggingface/peft

The peft config is built from ``--set`` fields, injected through peft's public API
(``peft.inject_adapter_in_model``; for tuners whose state is shared between layers, such as VeRA,
the public tuner class ``peft.<Type>Model(model, config, adapter_name)``, which is the same call
``inject_adapter_in_model`` makes). pebench's core still freezes, adds the head and counts; rows
carry ``method_origin = peft==<version>``. Where it sits in a timm ``Block``::

    norm1(x) ──▶ attn.qkv ──▶ attention        attn.qkv becomes a peft tuner layer wrapping the
                 └─ base_layer (the original     original Linear: ``blocks.i.attn.qkv.weight`` moves
                    nn.Linear, frozen)            to ``blocks.i.attn.qkv.base_layer.weight``

``target_modules`` names Linear layers *inside the transformer blocks* (``qkv``, ``proj``,
``fc1``, ``fc2``; comma-separated); it is turned into a peft regex anchored at ``blocks.<i>`` so
the patch embedding and the head are never targeted. Defaults: ``qkv`` for every type; IA3
``qkv,fc2`` with ``feedforward_modules=fc2`` (IA3 scales k, v and the FFN inner activation; the
fused qkv makes it scale q too). Other fields keep peft's defaults (dropouts 0.0).

Counts per adapted Linear (in ``i``, out ``o``), summed over ``depth × targets`` (ViT-B/16,
defaults): lora ``r(i+o)`` (+o lora_bias, +o DoRA) 294,912 · adalora ``init_r(i+o+1)`` 442,512 ·
loha ``2r(i+o)`` 589,824 · lokr Kronecker factors 21,504 · ia3 ``o`` (``i`` for feedforward)
64,512 · vera ``o+r`` 30,720 · boft ``i·b+o`` 64,512 · oft ``(i/b)·b(b-1)/2`` 142,848 · hra
``i·r`` 73,728 (formulas: :mod:`pebench.methods._peft_specs`). Other peft types that pass a build
probe on a tiny ViT (:mod:`pebench.methods._peft_probe`) are available without a closed form
(``expected_num_params`` raises).

Deliberate deviations: AdaLoRA runs at fixed rank ``init_r`` (its budget scheduler and orthogonal
regulariser live in ``AdaLoraModel.update_and_allocate``/``PeftModel``, which the harness does not
call), so its schedule fields are not exposed; BOFT is pinned to ``boft_n_butterfly_factor=1``
(peft silently uses 1 when its CUDA extension does not build, which would make counts depend on
the machine); OFT block sizes that do not divide a layer raise instead of peft's silent adjustment;
constants peft stores as frozen Parameters (AdaLoRA's ``ranknum``) become buffers, so every
parameter the method adds is trained. Requires peft>=0.18 (older OFT layouts differ, and older
``inject_adapter_in_model`` cannot build AdaLoRA).
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import types
import warnings
from importlib import metadata
from typing import Any, ClassVar

import torch
from torch import nn
from typing_extensions import override

from pebench.method import Caps, Method
from pebench.methods._peft_probe import Unfit, fit_on_tiny_vit
from pebench.methods._peft_specs import (
    BLOCK_LINEARS,
    SPECS,
    Spec,
    build_peft_config,
    make_config,
    split_targets,
)
from pebench.registry import RegistryError, suggest
from pebench.vit import Dims, check_vit

PEFT_PREFIX = "peft:"
PEFT_URL = "https://github.com/huggingface/peft"
INSTALL_HINT = 'pip install "pebench[peft]"'
MIN_PEFT = (0, 18)  # OFT's packed skew blocks, AdaLoRA via inject_adapter_in_model
ADAPTER = "default"


class PeftBridgeError(RegistryError, ValueError):
    """peft missing, an unknown peft type, or a type that cannot target a timm ViT."""


def peft_version() -> str | None:
    """Installed peft version, or ``None`` when peft is not installed."""
    try:
        return metadata.version("peft")
    except metadata.PackageNotFoundError:
        return None


def peft_origin() -> str:
    """``"peft==<version>"``, the ``method_origin`` of every ``peft:*`` row."""
    return f"peft=={peft_version()}"


def _supported(version: str) -> bool:
    head = [int(p) if p.isdigit() else 0 for p in version.split(".")[:2]]
    return tuple(head) >= MIN_PEFT


def _peft() -> Any:
    version = peft_version()
    if version is None:
        raise PeftBridgeError(f"peft methods need Hugging Face peft: {INSTALL_HINT}")
    if not _supported(version):
        need = ".".join(map(str, MIN_PEFT))
        raise PeftBridgeError(f"peft methods need peft>={need}, found {version}: {INSTALL_HINT}")
    return _peft_api()


@functools.cache
def _peft_api() -> types.SimpleNamespace:
    """The parts of peft's public API the bridge uses (imported after pebench's timm shim)."""
    import peft
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
    from peft.tuners.tuners_utils import BaseTunerLayer

    return types.SimpleNamespace(
        PeftType=peft.PeftType,
        PeftConfig=peft.PeftConfig,
        PromptLearningConfig=peft.PromptLearningConfig,
        inject_adapter_in_model=peft.inject_adapter_in_model,
        configs=PEFT_TYPE_TO_CONFIG_MAPPING,
        tuners=PEFT_TYPE_TO_TUNER_MAPPING,
        BaseTunerLayer=BaseTunerLayer,
    )


# ------------------------------------------------------------------------------- the method --
class _Constants(nn.Module):
    """Per-adapter constants that peft keeps as frozen ``Parameter``s, held as buffers.

    AdaLoRA stores its current rank (``ranknum``) as a ``requires_grad=False`` Parameter; as a
    buffer it is not a parameter the core could train or count (same forward and merge).
    """

    def __init__(self, values: nn.ParameterDict):
        super().__init__()
        for k, v in values.items():
            self.register_buffer(k, v.detach().clone(), persistent=False)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._buffers[key]

    def __contains__(self, key: object) -> bool:
        return key in self._buffers

    def keys(self) -> Any:
        return self._buffers.keys()


def tuner_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of every peft tuner layer in ``model`` (outermost wrappers only)."""
    base_tuner_layer = _peft().BaseTunerLayer
    found: list[tuple[str, nn.Module]] = []
    for name, m in model.named_modules():
        if isinstance(m, base_tuner_layer) and not any(name.startswith(p + ".") for p, _ in found):
            found.append((name, m))
    return found


class PeftMethod(Method):
    """Base of the ``peft:<type>`` classes made by :func:`peft_method_class`."""

    peft_type: ClassVar[str] = ""
    code_url = PEFT_URL

    def peft_config(self) -> Any:
        """The peft ``PeftConfig`` this method injects."""
        return build_peft_config(_peft(), self.peft_type, self.config)

    def _shapes(self, dims: Dims) -> dict[str, tuple[int, int]]:
        d, h = dims.embed_dim, dims.mlp_hidden
        return {"qkv": (d, 3 * d), "proj": (d, d), "fc1": (d, h), "fc2": (h, d)}

    @override
    def attach(self, model: nn.Module) -> nn.Module:
        vit = check_vit(model)
        peft = _peft()
        spec = SPECS.get(self.peft_type, Spec())
        if spec.check is not None:
            for i, blk in enumerate(vit.blocks):
                for t in split_targets(self.config.target_modules):
                    linear = getattr(getattr(blk, BLOCK_LINEARS[t]), t)
                    spec.check(
                        self.config, f"blocks.{i}.{BLOCK_LINEARS[t]}.{t}", linear.in_features
                    )
        config = self.peft_config()
        with warnings.catch_warnings():  # BOFT: peft's CUDA-extension build attempt
            warnings.filterwarnings("ignore", message="Failed to load the CUDA extension")
            warnings.filterwarnings("ignore", message="Setting boft_n_butterfly_factor to 1")
            out = self._inject(peft, vit, config)
        if out is not vit:
            raise PeftBridgeError(f"peft:{self.peft_type} did not adapt the model in place")
        for _, layer in tuner_layers(vit):
            layer.train(vit.training)  # peft creates its modules in train mode
            for attr in layer.other_param_names:
                value = getattr(layer, attr, None)
                if isinstance(value, nn.ParameterDict) and not any(
                    p.requires_grad for p in value.values()
                ):
                    setattr(layer, attr, _Constants(value))
        return vit

    def _inject(self, peft: Any, vit: nn.Module, config: Any) -> nn.Module:
        tuner_cls = peft.tuners[config.peft_type]
        if not getattr(tuner_cls, "uses_shared_state", False):
            return peft.inject_adapter_in_model(config, vit, adapter_name=ADAPTER)
        # shared state (VeRA's projections): the public tuner class, as inject_adapter_in_model
        # does for the others; the state must end up held by the model's layers
        tuner = tuner_cls(vit, config, adapter_name=ADAPTER)
        held = {id(t) for t in itertools.chain(vit.parameters(), vit.buffers())}
        state = itertools.chain(tuner.named_parameters(), tuner.named_buffers())
        if stray := [n for n, t in state if id(t) not in held]:
            raise PeftBridgeError(
                f"peft:{self.peft_type} keeps state outside the model {stray[:3]}"
            )
        return tuner.model

    def trainable(self, model: nn.Module) -> set[str]:
        """Parameters of each tuner layer's adapter containers (``adapter_layer_names``)."""
        ids = set()
        for _, layer in tuner_layers(model):
            base = {id(p) for p in layer.get_base_layer().parameters()}
            for attr in layer.adapter_layer_names:
                sub = getattr(layer, attr, None)
                if isinstance(sub, nn.Module):
                    ids |= {id(p) for p in sub.parameters() if id(p) not in base}
        return {n for n, p in model.named_parameters() if id(p) in ids}

    @override
    def backbone_key(self, key: str, model: nn.Module) -> str:
        for name, layer in tuner_layers(model):
            if key.startswith(name + "."):
                base = layer.get_base_layer()
                where = next(n for n, m in layer.named_modules() if m is base)
                return f"{name}.{where}.{key[len(name) + 1 :]}"
        return key

    @override
    def expected_num_params(self, dims: Dims) -> int:
        per_layer = SPECS.get(self.peft_type, Spec()).per_layer
        if per_layer is None:
            raise NotImplementedError(f"peft:{self.peft_type} has no closed-form parameter count")
        ff = set(split_targets(getattr(self.config, "feedforward_modules", "")))
        shapes = self._shapes(dims)
        return dims.depth * sum(
            per_layer(self.config, *shapes[t], t in ff)
            for t in split_targets(self.config.target_modules)
        )

    @torch.no_grad()
    def merge(self, model: nn.Module) -> nn.Module:
        """Each tuner layer merges itself, then gives way to its base layer (original keys)."""
        if not self.caps.mergeable:
            return super().merge(model)
        for name, layer in tuner_layers(model):
            layer.merge(safe_merge=True)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, layer.get_base_layer())
        if "peft_config" in vars(model):
            del model.peft_config
        return model

    @override
    def describe(self) -> dict[str, Any]:
        closed = SPECS.get(self.peft_type, Spec()).per_layer is not None
        return super().describe() | {
            "origin": peft_origin(),
            "peft_type": self.peft_type.upper(),
            "expected_num_params": "closed form" if closed else "not implemented",
        }


# ------------------------------------------------------------------------- discovery/probes --
def _all_types() -> list[str]:
    return sorted(t.name.lower() for t in _peft().PeftType)


@functools.cache
def _probe(key: str) -> tuple[str | None, bool]:
    """``(reason it cannot target a ViT or None, identity at init)`` from a tiny-ViT build."""
    peft = _peft()
    config_cls = peft.configs.get(peft.PeftType[key.upper()])
    if config_cls is None or peft.PeftType[key.upper()] not in peft.tuners:
        return "peft has no module tuner for it (prompt learning / adaption prompt)", False
    if issubclass(config_cls, peft.PromptLearningConfig):
        return "it is prompt learning (virtual tokens for a transformers model)", False
    if key in SPECS:
        return None, True
    sink, threads = io.StringIO(), torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is much faster on a busy machine
    with (
        torch.random.fork_rng(devices=[]),
        warnings.catch_warnings(),
        contextlib.redirect_stderr(sink),
        contextlib.redirect_stdout(sink),
    ):
        warnings.simplefilter("ignore")
        try:
            return None, fit_on_tiny_vit(_make_class(key))
        except Unfit as err:
            return str(err), False
        except Exception as err:  # any failure means: not usable on a timm ViT
            return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}", False
        finally:
            torch.set_num_threads(threads)


def available_peft_types() -> list[str]:
    """Lower-case peft types this bridge can build on a timm ViT with the installed peft."""
    version = peft_version()
    if version is None or not _supported(version):
        return []
    return [t for t in _all_types() if _probe(t)[0] is None]


@functools.cache
def _make_class(key: str) -> type[PeftMethod]:
    peft = _peft()
    spec = SPECS.get(key, Spec(mergeable=False))
    config_cls = peft.configs[peft.PeftType[key.upper()]]
    identity = True if key in SPECS else None
    ns = {
        "__module__": __name__,
        "__doc__": f"Hugging Face peft {key.upper()} on the blocks of a timm ViT.",
        "name": PEFT_PREFIX + key,
        "title": f"Hugging Face peft {key.upper()} (peft=={peft_version()})",
        "paper_url": spec.paper_url or PEFT_URL,
        "peft_type": key,
        "caps": Caps(identity_at_init=bool(identity), mergeable=spec.mergeable),
        "presets": {},
        "Config": make_config(peft, key, config_cls, spec),
    }
    return types.new_class(PEFT_PREFIX + key, (PeftMethod,), exec_body=lambda d: d.update(ns))


def peft_method_class(peft_type: str) -> type[Method]:
    """The ``Method`` class for ``peft_type`` (``"lora"``, ``"LORA"`` or ``"peft:lora"``).

    Raises:
        PeftBridgeError: peft is not installed, the type is unknown (with suggestions), or it
            cannot target a timm ViT (names the type and why). Also a ``RegistryError``.
    """
    key = peft_type.lower().removeprefix(PEFT_PREFIX)
    version = peft_version()
    if version is None:
        raise PeftBridgeError(
            f"method {PEFT_PREFIX + key!r} needs Hugging Face peft: {INSTALL_HINT}"
        )
    if key not in _all_types():
        names = [PEFT_PREFIX + t for t in available_peft_types()]
        raise PeftBridgeError(suggest(PEFT_PREFIX + key, names, f"peft type (peft=={version})"))
    reason, identity = _probe(key)
    if reason is not None:
        raise PeftBridgeError(
            f"peft type {key.upper()!r} cannot target a timm ViT: {reason}. "
            f"Available: {', '.join(PEFT_PREFIX + t for t in available_peft_types())}"
        )
    cls = _make_class(key)
    if key not in SPECS:
        cls.caps = Caps(identity_at_init=identity, mergeable=False)
    return cls


__all__ = [
    "PEFT_PREFIX",
    "PeftBridgeError",
    "PeftMethod",
    "available_peft_types",
    "peft_method_class",
    "peft_origin",
    "peft_version",
    "tuner_layers",
]
