"""Backbones by timm name, with weights from the hub, a local file, or (explicitly) random init.

pebench registers a few small ViTs in timm's own registry so that tests and the demo suite use
real timm ``VisionTransformer`` models at CPU scale:

============================  ==========================================================
``pebench_vit_test_cls``      D=64, depth 2, 4 heads, patch 8 @ 32 px, cls token (tests)
``pebench_vit_test_gap``      same, no cls token, average pooling + ``fc_norm`` (tests)
``pebench_vit_micro``         D=96, depth 4, 3 heads, patch 4 @ 32 px, cls token (demo)
============================  ==========================================================

Video backbones (VideoMAE layout, :mod:`pebench.backbones.videomae`):
``pebench_videomae_base_patch16_224`` and ``pebench_video_test``. They have no hub weights:
``weights`` must be a local VideoMAE checkpoint
(official fine-tuning/pretraining layouts, converted by
:func:`pebench.backbones.videomae_checkpoint.load_videomae_checkpoint`) or ``"random"``.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pebench._compat import import_timm
from pebench.backbone_names import (
    EMBEDDED,
    RANDOM,
    SMALL,
    WEIGHTS_DIR,
    BackboneError,
    check_embedded,
    embedded_weights,
    is_own,
    is_video_model_name,
    sha256_file,
    video_weights_path,
    weights_tag,
)

timm = import_timm()
from timm.models import register_model  # noqa: E402
from timm.models._builder import build_model_with_cfg  # noqa: E402
from timm.models._registry import generate_default_cfgs  # noqa: E402
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn  # noqa: E402

from pebench.backbones import videomae  # noqa: E402, F401 - registers the video models
from pebench.backbones.checkpoint import CheckpointError, names, read_checkpoint  # noqa: E402
from pebench.backbones.videomae_checkpoint import load_videomae_checkpoint  # noqa: E402
from pebench.vit import NotAViTError, check_vit  # noqa: E402

_CFG = dict(
    input_size=(3, 32, 32),
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    num_classes=0,
    interpolation="bicubic",
    crop_pct=1.0,
    first_conv="patch_embed.proj",
    classifier="head",
)
#: timm pretrained configs: embedded files first (the default tag), then random-only models
default_cfgs = generate_default_cfgs(
    {tag: dict(_CFG, file=str(path)) for tag, (path, _) in EMBEDDED.items()}
    | {name: dict(_CFG) for name in SMALL if not any(t.startswith(name + ".") for t in EMBEDDED)}
)


def _make_small(name: str):
    def entry(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
        args = dict(img_size=32, **SMALL[name])
        args.update(kwargs)
        return build_model_with_cfg(
            VisionTransformer, name, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **args
        )

    entry.__name__ = name
    entry.__module__ = __name__
    entry.__doc__ = f"pebench small ViT {name}: {SMALL[name]}"
    return entry


for _name in SMALL:
    if not timm.is_model(_name):
        register_model(_make_small(_name))


@dataclass(frozen=True)
class Backbone:
    """A created backbone and how it was made.

    Attributes:
        model: the timm model with ``num_classes=0`` (head added by :func:`pebench.method.prepare`).
        name: timm name as given (with tag, if any).
        weights: ``"hub:<name>"``, ``"file:<sha256 prefix>"`` or ``"random"``.
        mean: normalisation mean of the weights (from timm's pretrained config).
        std: normalisation std.
        image_size: native input size.
        num_frames: clip length T for video backbones; ``None`` for image backbones.
    """

    model: nn.Module
    name: str
    weights: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    num_frames: int | None = None


def known_backbone(name: str) -> None:
    """Refuse a name timm does not know (with suggestions) or a model pebench cannot adapt.

    Raises:
        BackboneError: unknown name, or not a timm Vision Transformer (``resnet50``).
    """
    base = name.split(".")[0]
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=4, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise BackboneError(f"unknown backbone {name!r} (not a timm model).{hint}")
    if not is_own(name):
        _check_architecture(name)


def create_backbone(
    name: str,
    weights: str | None = None,
    image_size: int | None = None,
    tag: str | None = None,
    **kwargs: Any,
) -> Backbone:
    """Create a timm backbone without head.

    Args:
        name: timm model name, optionally with a pretrained tag
            (e.g. ``vit_base_patch16_224.augreg_in21k``).
        weights: ``None`` = pretrained weights of ``name`` from the Hugging Face hub; a path =
            a local checkpoint (safetensors, ``.pth``/``.bin`` state dict or Google ``.npz``),
            loaded through timm's own pretrained-loading code; ``"random"`` = random init.
        image_size: input size (position embeddings are resampled by timm when loading).
        tag: the :func:`weights_tag` of ``(name, weights)`` when the caller has it: the file is
            then not hashed again (a sweep hashes each weights file once, when it is planned).
        **kwargs: passed to ``timm.create_model``.

    Raises:
        BackboneError: unknown name, missing/unreadable file, or hub weights unavailable.
    """
    known_backbone(name)
    if image_size is not None:
        kwargs["img_size"] = image_size
    kwargs.setdefault("num_classes", 0)
    if weights == RANDOM:
        model, tag = timm.create_model(name, pretrained=False, **kwargs), RANDOM
    elif is_video_model_name(name):
        model, tag = _video_from_file(name, weights, kwargs), tag or weights_tag(name, weights)
    elif weights is None:
        tag = tag or weights_tag(name, None)  # verifies an embedded checkpoint before loading it
        model = _from_hub(name, kwargs)
    else:
        model, tag = _from_file(name, Path(weights), kwargs), tag or weights_tag(name, weights)
    cfg = timm.data.resolve_data_config({}, model=model)
    return Backbone(
        model=model,
        name=name,
        weights=tag,
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        image_size=int(cfg["input_size"][-1]),
        num_frames=getattr(model, "num_frames", None),
    )


def _check_architecture(name: str) -> None:
    """Refuse a timm model pebench cannot adapt before any weights are fetched or read.

    The model is built on the meta device (no memory, no init cost) and checked as methods check
    it, so ``--backbone resnet50`` is a model-type error, not a hub or ``img_size`` failure.

    Raises:
        BackboneError: the model is not a timm ``VisionTransformer`` with adaptable blocks.
    """
    try:
        with torch.device("meta"):
            probe = timm.create_model(name, pretrained=False, num_classes=0)
    except Exception:  # not buildable this way: creating it for real reports the cause
        return
    try:
        check_vit(probe)
    except NotAViTError as err:
        raise BackboneError(
            f"backbone {name!r} cannot be adapted: {err} (pebench needs a timm Vision "
            "Transformer, e.g. vit_base_patch16_224; see `pebench list budgets` for the ones used)"
        ) from None


def _from_hub(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """An image backbone with its pretrained weights (embedded file or Hugging Face hub)."""
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as err:  # hub errors come in many types
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise BackboneError(
            f"could not fetch pretrained weights for {name!r} from the Hugging Face hub"
            f"{' (HF_HUB_OFFLINE=1)' if offline else ''}: {type(err).__name__}: {err}. "
            "Pass --weights PATH for a local checkpoint, or --weights random to run with "
            "random init (results are then labelled random)."
        ) from err


def _from_file(name: str, path: Path, kwargs: dict[str, Any]) -> nn.Module:
    """An image backbone with a local checkpoint, read so that the file can never run code.

    ``.npz`` (Google JAX/Flax) goes through timm's ``load_pretrained`` (``np.load`` without
    pickles); every other file through :func:`~pebench.backbones.checkpoint.read_checkpoint`
    (safetensors, or ``torch.load(weights_only=True)``), then timm's ViT key conversion and
    position-embedding resampling, as timm's own pretrained loading does, but without its
    ``weights_only=False`` unpickling in older timm releases.
    """
    if not path.is_file():
        raise BackboneError(f"weights file not found: {path}")
    model = timm.create_model(name, pretrained=False, **kwargs)
    try:
        if path.suffix == ".npz":
            model.load_pretrained(str(path))
        else:
            _load_state(model, read_checkpoint(path))
    except Exception as err:  # reader, converter and load_state_dict errors come in many types
        lines = (line.strip() for line in str(err).splitlines())
        detail = "; ".join(line for line in lines if line)  # a refusal is one line
        raise BackboneError(
            f"could not load weights file {path} into {name!r}: {type(err).__name__}: {detail}"
        ) from err
    return model


def _load_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """A flat checkpoint into ``model``: converted and resampled, the head dropped when absent.

    Raises:
        CheckpointError: keys the model lacks, model keys the checkpoint lacks, or tensors of
            other shapes than the model's (named, in one line).
    """
    raw = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    state = checkpoint_filter_fn(state, model)
    if model.num_classes == 0:  # pebench adds its own head
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    _check_shapes(model, state, raw)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        parts = [f"missing {names(missing)}"] if missing else []
        parts += [f"unexpected {names(unexpected)}"] if unexpected else []
        raise CheckpointError(f"checkpoint does not fit the model: {'; '.join(parts)}")


def _shape(shape: tuple[int, ...]) -> str:
    return f"({', '.join(map(str, shape))}{',' if len(shape) == 1 else ''})"


def _check_shapes(
    model: nn.Module, state: dict[str, torch.Tensor], raw: dict[str, tuple[int, ...]]
) -> None:
    """Every tensor the model has must have the model's shape (torch reports it in many lines).

    ``raw`` holds the file's own shapes: a tensor the conversion kept under its name is named
    with the shape it has in the file.

    Raises:
        CheckpointError: the first tensor of another shape (model order) with both shapes, and
            how many more there are.
    """
    expected = model.state_dict()
    wrong = [
        k for k, want in expected.items() if k in state and tuple(state[k].shape) != want.shape
    ]
    if not wrong:
        return
    first = wrong[0]
    have = raw.get(first, tuple(state[first].shape))
    text = (
        f"tensor {first} has shape {_shape(have)}, the backbone expects "
        f"{_shape(tuple(expected[first].shape))}"
    )
    if more := len(wrong) - 1:
        text += f"; {more} more {'tensor has' if more == 1 else 'tensors have'} another shape: "
        text += names(wrong[1:], 5)
    raise CheckpointError(f"{text} (is it a checkpoint of another --backbone?)")


def _video_from_file(name: str, weights: str | None, kwargs: dict[str, Any]) -> nn.Module:
    """A video backbone with a local VideoMAE checkpoint (see :mod:`pebench.backbones.videomae`)."""
    path = Path(video_weights_path(name, weights))
    model = timm.create_model(name, pretrained=False, **kwargs)
    try:
        load_videomae_checkpoint(model, path)
    except CheckpointError as err:
        raise BackboneError(f"could not load weights file {path} into {name!r}: {err}") from err
    return model


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Save a backbone's state dict as safetensors (used by tests and ``pebench pretrain``)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))


def tiny_vit(kind: str = "cls", **kwargs: Any) -> VisionTransformer:
    """A random-init test ViT (``kind`` in {"cls", "gap"}) without head."""
    kwargs.setdefault("num_classes", 0)
    return timm.create_model(f"pebench_vit_test_{kind}", pretrained=False, **kwargs)


__all__ = [
    "EMBEDDED",
    "RANDOM",
    "WEIGHTS_DIR",
    "Backbone",
    "BackboneError",
    "check_embedded",
    "create_backbone",
    "embedded_weights",
    "known_backbone",
    "save_weights",
    "sha256_file",
    "tiny_vit",
    "torch",
    "weights_tag",
]
