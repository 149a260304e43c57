"""A video ViT in the VideoMAE layout, built from timm parts so every method plugin attaches to it.

:class:`VideoVisionTransformer` is a timm ``VisionTransformer`` (timm ``Block`` modules with fused
``attn.qkv``), so :func:`pebench.vit.check_vit` accepts it and methods see the same blocks, slots
and linears as on the image ViT. What differs (VideoMAE, arXiv 2203.12602, ``MCG-NJU/VideoMAE``
``modeling_finetune.py``):

* **tubelet embedding** — a ``Conv3d`` with kernel = stride = ``(t, p, p)`` (2 × 16 × 16 on ViT-B)
  maps a clip ``(B, C, T, H, W)`` to ``N = T/t · H/p · W/p`` tokens ``(B, N, D)``, flattened
  time-major (token ``n = i_t·(H/p·W/p) + i_h·W/p + i_w``), so a token sequence is ``T/t``
  consecutive frames of the ``H/p × W/p`` patch grid (Convpass relies on this order);
* **joint space-time attention** over all N tokens (plain timm blocks), **no cls token**;
* **fixed sinusoidal position table** (:func:`sinusoid_table`, VideoMAE's ``get_sinusoid_encoding
  _table``) added to the tokens. It is a *non-persistent buffer* named ``pos_embed``: not a
  Parameter (never trained, never counted, no method can select it), not in the ``state_dict``
  (VideoMAE checkpoints do not store it either; it is a function of ``N`` and ``D``);
* **mean pooling + ``fc_norm``** (``global_pool="avg"``), no final ``norm`` before pooling.

The official attention has ``q_bias`` and ``v_bias`` and no k bias; here the fused ``qkv.bias``
holds ``[q_bias, 0, v_bias]``. The k slot is kept (timm layout) and is harmless: a k bias adds
``q·b_k`` to every logit of a query row, which the softmax cancels, so whatever its value (trained
by full fine-tuning, or not) it never changes an output; its exact gradient is zero.

Registered timm models (``timm.create_model`` or :func:`pebench.backbones.create_backbone`):

=====================================  ========================================================
``pebench_videomae_base_patch16_224``  ViT-B: D=768, depth 12, 12 heads, 16 px patches, 224 px,
                                       8 frames, tubelet 2 → 4 × 14 × 14 = 784 tokens
``pebench_video_test``                 D=64, depth 2, 4 heads, 8 px patches, 32 px, 4 frames,
                                       tubelet 2 → 2 × 4 × 4 = 32 tokens (tests, conformance)
=====================================  ========================================================

Both have no hub weights: pass a local VideoMAE checkpoint (:func:`load_videomae_checkpoint`,
``pebench.backbones.create_backbone(name, weights=PATH)``) or ask for random init explicitly.
:func:`example_input` builds a correctly shaped input for image and video backbones alike.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn
from typing_extensions import override

from pebench._compat import import_timm
from pebench.backbone_names import VIDEO_MODELS, is_video_model_name

timm = import_timm()
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # noqa: E402
from timm.models import register_model  # noqa: E402
from timm.models._builder import build_model_with_cfg  # noqa: E402
from timm.models._registry import generate_default_cfgs  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

# VideoMAE normalises clips with the ImageNet mean/std (its dataset pipelines), although its model
# ``_cfg`` says 0.5; the pipeline is what the weights saw.
_CFG = dict(
    mean=IMAGENET_DEFAULT_MEAN,
    std=IMAGENET_DEFAULT_STD,
    num_classes=0,
    interpolation="bilinear",
    crop_pct=1.0,
    first_conv="patch_embed.proj",
    classifier="head",
    license="cc-by-nc-4.0",
    paper_ids="arXiv:2203.12602",
)
default_cfgs = generate_default_cfgs(
    {
        "pebench_videomae_base_patch16_224": dict(_CFG, input_size=(3, 224, 224)),
        "pebench_video_test": dict(_CFG, input_size=(3, 32, 32)),
    }
)


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed position table, shape ``(1, num_positions, dim)``, float32.

    ``angle(n, j) = n / 10000^(2·⌊j/2⌋ / dim)``; even columns hold ``sin``, odd columns ``cos``
    (computed in float64, then rounded to float32 as VideoMAE does).
    """
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    expo = 2.0 * torch.div(torch.arange(dim), 2, rounding_mode="floor").double() / dim
    angle = pos / torch.pow(10000.0, expo)[None, :]
    table = torch.empty_like(angle)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.float().unsqueeze(0)


class TubeletEmbed(nn.Module):
    """Clip ``(B, C, T, H, W)`` → tokens ``(B, T/t · H/p · W/p, D)`` through one ``Conv3d``.

    Keeps the attributes timm's ``PatchEmbed`` exposes (``img_size``, ``patch_size``,
    ``grid_size``, ``num_patches``, ``proj``) plus ``num_frames``, ``tubelet_size`` and
    ``temporal_size`` (= T/t).

    Args:
        img_size: frame height = width (or ``(H, W)``).
        patch_size: spatial patch side p.
        in_chans: input channels C.
        embed_dim: token width D.
        bias: Conv3d bias.
        num_frames: clip length T.
        tubelet_size: frames per token t.
        dynamic_img_pad: must be False (fixed clip shape).
        device: parameter device.
        dtype: parameter dtype.

    Raises:
        ValueError: sizes that do not divide evenly, or dynamic padding.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        bias: bool = True,
        num_frames: int = 8,
        tubelet_size: int = 2,
        dynamic_img_pad: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if dynamic_img_pad:
            raise ValueError("TubeletEmbed: dynamic_img_pad is not supported (fixed clip shape)")
        self.img_size = _pair(img_size, "img_size")
        self.patch_size = _pair(patch_size, "patch_size")
        if self.patch_size[0] != self.patch_size[1]:
            raise ValueError(f"TubeletEmbed: square patches only, got patch_size={patch_size}")
        if any(s % p for s, p in zip(self.img_size, self.patch_size, strict=True)):
            raise ValueError(
                f"TubeletEmbed: img_size {self.img_size} is not a multiple of "
                f"patch_size {self.patch_size}"
            )
        if tubelet_size < 1 or num_frames < 1 or num_frames % tubelet_size:
            raise ValueError(
                f"TubeletEmbed: num_frames={num_frames} must be a positive multiple of "
                f"tubelet_size={tubelet_size}"
            )
        self.num_frames, self.tubelet_size = int(num_frames), int(tubelet_size)
        self.grid_size = tuple(s // p for s, p in zip(self.img_size, self.patch_size, strict=True))
        self.temporal_size = self.num_frames // self.tubelet_size
        self.num_patches = self.temporal_size * self.grid_size[0] * self.grid_size[1]
        self.in_chans = in_chans
        self.flatten = True
        kernel = (self.tubelet_size, *self.patch_size)
        self.proj = nn.Conv3d(
            in_chans, embed_dim, kernel, stride=kernel, bias=bias, device=device, dtype=dtype
        )
        self.norm = nn.Identity()

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """``(C, T, H, W)`` of one input clip."""
        return (self.in_chans, self.num_frames, *self.img_size)

    def feat_ratio(self, as_scalar: bool = True) -> int | tuple[int, int]:
        """Spatial reduction of the token grid (timm ``PatchEmbed`` API)."""
        return self.patch_size[0] if as_scalar else self.patch_size

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or tuple(x.shape[1:]) != self.clip_shape:
            raise ValueError(
                f"video backbone expects clips (B, C, T, H, W) = "
                f"(B, {', '.join(map(str, self.clip_shape))}), got {tuple(x.shape)}"
            )
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


def _pair(value: int | tuple[int, int], what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(int(v) < 1 for v in pair):
        raise ValueError(f"{what} must be a positive int or (H, W), got {value!r}")
    return int(pair[0]), int(pair[1])


#: VisionTransformer options the VideoMAE layout fixes (value forced, a different value refused)
_FIXED = dict(
    class_token=False,
    reg_tokens=0,
    global_pool="avg",
    pos_embed="none",
    no_embed_class=False,
    pre_norm=False,
    final_norm=True,
    fc_norm=None,
    dynamic_img_size=False,
)


class VideoVisionTransformer(VisionTransformer):
    """A timm ``VisionTransformer`` on video clips in the VideoMAE layout (see the module doc).

    Args:
        num_frames: clip length T.
        tubelet_size: frames per token t.
        **kwargs: ``VisionTransformer`` arguments (``img_size``, ``patch_size``, ``embed_dim``,
            ``depth``, ``num_heads``, ``num_classes``, ``drop_path_rate``, ...). The options in
            ``_FIXED`` (no cls token, mean pooling + ``fc_norm``, no learned position embedding)
            may only be given with their fixed values.

    Raises:
        ValueError: a fixed option given with another value, or inconsistent sizes.
    """

    def __init__(self, num_frames: int = 8, tubelet_size: int = 2, **kwargs: Any):
        for key, value in _FIXED.items():
            if key in kwargs and kwargs[key] != value:
                raise ValueError(
                    f"VideoVisionTransformer: {key}={kwargs[key]!r} is not supported; the "
                    f"VideoMAE layout fixes {key}={value!r}"
                )
        if "embed_layer" in kwargs:
            raise ValueError("VideoVisionTransformer: embed_layer is fixed (TubeletEmbed)")
        kwargs.update(_FIXED)
        embed = partial(TubeletEmbed, num_frames=num_frames, tubelet_size=tubelet_size)
        super().__init__(embed_layer=embed, **kwargs)
        self.num_frames, self.tubelet_size = int(num_frames), int(tubelet_size)
        del self.pos_embed  # timm stored None; the fixed table replaces it
        num, dim = self.patch_embed.num_patches, self.embed_dim
        device = self.patch_embed.proj.weight.device
        self.register_buffer("pos_embed", sinusoid_table(num, dim).to(device), persistent=False)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.pos_drop(x + self.pos_embed.to(dtype=x.dtype))

    def init_weights(self, mode: str = "", needs_reset: bool = True) -> None:
        """Run timm's init, then the fixed position table is restored (timm would randomise it)."""
        super().init_weights(mode, needs_reset)
        table = self._buffers.get("pos_embed")
        if table is not None:
            with torch.no_grad():
                table.copy_(sinusoid_table(table.shape[1], table.shape[2]))

    def set_input_size(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: create a new backbone with the clip size wanted."""
        raise NotImplementedError(
            "VideoVisionTransformer: create the backbone with the wanted img_size/num_frames "
            "instead of resizing it"
        )


def _entry(name: str):
    def entry(pretrained: bool = False, **kwargs: Any) -> VideoVisionTransformer:
        if pretrained:
            raise ValueError(
                f"{name} has no downloadable weights; load a local VideoMAE checkpoint with "
                f"pebench.backbones.create_backbone({name!r}, weights=PATH) (or weights='random')"
            )
        args = dict(VIDEO_MODELS[name])
        args.update(kwargs)
        return build_model_with_cfg(VideoVisionTransformer, name, False, **args)

    entry.__name__ = name
    entry.__module__ = __name__
    entry.__doc__ = f"pebench video ViT {name}: {VIDEO_MODELS[name]}"
    return entry


for _name in VIDEO_MODELS:
    if not timm.is_model(_name):
        register_model(_entry(_name))


def is_video_model(model: nn.Module) -> bool:
    """True if ``model`` takes clips ``(B, C, T, H, W)`` (a tubelet patch embedding)."""
    return isinstance(getattr(model, "patch_embed", None), TubeletEmbed)


def tiny_video(**kwargs: Any) -> VideoVisionTransformer:
    """A random-init ``pebench_video_test`` without head (kwargs override its defaults)."""
    kwargs.setdefault("num_classes", 0)
    return timm.create_model("pebench_video_test", pretrained=False, **kwargs)


def input_shape(model: nn.Module, batch: int = 1, image_size: int | None = None) -> tuple:
    """Input shape of ``model``: ``(B, C, T, H, W)`` for video, ``(B, C, H, W)`` for images.

    Args:
        model: a timm ViT (image) or :class:`VideoVisionTransformer`.
        batch: B.
        image_size: H = W override (default: the model's own size).

    Raises:
        ValueError: the model's input size cannot be read and no ``image_size`` was given.
    """
    embed = getattr(model, "patch_embed", None)
    if isinstance(embed, TubeletEmbed):
        c, t, h, w = embed.clip_shape
        if image_size is not None:
            h = w = image_size
        return (batch, c, t, h, w)
    size = getattr(embed, "img_size", None)
    if image_size is not None:
        size = (image_size, image_size)
    elif size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        size = tuple(cfg.get("input_size", ())[-2:]) or None
    if size is None:
        raise ValueError(
            f"cannot tell the input size of {type(model).__name__}; pass image_size explicitly"
        )
    in_chans = getattr(model, "in_chans", None) or embed.proj.in_channels
    return (batch, in_chans, *size)


def example_input(
    model: nn.Module,
    batch: int = 1,
    *,
    image_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A correctly shaped input for ``model`` (image or video), on the model's device.

    Zeros, or standard-normal values drawn from ``generator`` when one is given.
    """
    shape = input_shape(model, batch, image_size)
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    if generator is None:
        return torch.zeros(shape, device=device)
    return torch.randn(shape, generator=generator).to(device)


__all__ = [
    "VIDEO_MODELS",
    "TubeletEmbed",
    "VideoVisionTransformer",
    "example_input",
    "input_shape",
    "is_video_model",
    "is_video_model_name",
    "sinusoid_table",
    "tiny_video",
]
