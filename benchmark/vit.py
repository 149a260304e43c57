"""timm ViT surgery shared by every method plugin.

Methods add modules, never hooks, and never rename backbone parameters: every backbone key of the
timm ``state_dict`` stays where it was, new tensors appear next to it. Two in-place conversions
make this possible without copying weights:

* :class:`PetlBlock` — a timm ``Block`` whose forward has named *slots* (optional child modules)::

      x ─ pre ─┬─ norm1 ─┬─ attn_in ─ attn ─ ls1 ─ attn_out ─ drop_path1 ─(+)─┬─ norm2 ─ ...
               │         └──────────────── attn_branch(norm1 x) ────────────(+)│
               └───────────────────────── residual ─────────────────────────(+)┘
      ... ─┬─ mlp_in ─ mlp ─ ls2 ─ mlp_out ─ drop_path2 ─(+)─ post ─▶
           ├──────────── mlp_branch(norm2 x  or  the stream x_a) ──────────(+)
           └──────────────────────── residual ─────────────────────────────(+)

* :class:`PetlLinear` — an ``nn.Linear`` with an additive ``delta`` child:
  ``y = W x + b + delta(x)``.
* :func:`wrap_output` — an ``nn.Linear`` or LayerNorm followed by a named child module:
  ``y = child(layer(x))`` (SSF's scale-and-shift after a layer).

All three keep their original parameters (same ``Parameter`` objects), so ``merge`` can fold a delta
into ``weight``/``bias`` and turn the module back into the plain timm class.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from typing_extensions import override

from pebench._compat import import_timm
from pebench.errors import PebenchError

timm = import_timm()
from timm.models.vision_transformer import Block, VisionTransformer  # noqa: E402

SLOTS = ("pre", "attn_in", "attn_out", "attn_branch", "mlp_in", "mlp_out", "mlp_branch", "post")


class NotAViTError(PebenchError, TypeError):
    """Raised when a method is attached to a model that is not a timm VisionTransformer.

    A user error (``--backbone resnet50``): one line, never a traceback.
    """


class PetlModule(nn.Module):
    """Base class of every module a method adds.

    The default :meth:`pebench.method.Method.trainable` selects the parameters of these modules
    structurally (by type), never by name substring.
    """


@dataclass(frozen=True)
class Dims:
    """Dimensions of a ViT backbone that parameter-count formulas need.

    Video backbones (:mod:`pebench.backbones.videomae`) have
    ``num_patches = num_frames / tubelet_size · (H/p)·(W/p)`` and a fixed (non-trainable)
    position table: ``learned_pos_embed=False``.
    Image backbones have ``num_frames = tubelet_size = 1``.
    """

    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden: int
    num_patches: int
    num_prefix_tokens: int
    has_cls_token: bool
    num_classes: int
    patch_size: int
    in_chans: int
    num_frames: int = 1
    tubelet_size: int = 1
    learned_pos_embed: bool = True

    @property
    def num_tokens(self) -> int:
        """Sequence length seen by the blocks (prefix tokens + patch tokens)."""
        return self.num_patches + self.num_prefix_tokens

    @property
    def patch_volume(self) -> int:
        """Inputs per token of the patch embedding: ``in_chans · tubelet_size · patch_size²``."""
        return self.in_chans * self.tubelet_size * self.patch_size**2


def check_vit(model: nn.Module) -> VisionTransformer:
    """Return ``model`` if it is a timm ViT whose blocks pebench can adapt, else raise.

    Raises:
        NotAViTError: naming the model class and what is missing.
    """
    if not isinstance(model, VisionTransformer):
        raise NotAViTError(
            f"pebench methods attach to timm VisionTransformer models; got "
            f"{type(model).__module__}.{type(model).__name__}"
        )
    for i, blk in enumerate(model.blocks):
        if not isinstance(blk, Block):
            raise NotAViTError(
                f"block {i} is a {type(blk).__name__}; pebench adapts timm "
                f"`vision_transformer.Block` (pre-norm, fused qkv) blocks only"
            )
        qkv = getattr(blk.attn, "qkv", None)
        if not isinstance(qkv, nn.Linear):
            raise NotAViTError(f"block {i} has no fused `attn.qkv` Linear")
        if not (isinstance(blk.mlp.fc1, nn.Linear) and isinstance(blk.mlp.fc2, nn.Linear)):
            raise NotAViTError(f"block {i} has no `mlp.fc1`/`mlp.fc2` Linear layers")
    return model


def vit_dims(model: nn.Module) -> Dims:
    """Read :class:`Dims` off a timm ViT."""
    vit = check_vit(model)
    blk = vit.blocks[0]
    patch = vit.patch_embed.patch_size
    head = vit.get_classifier()
    return Dims(
        embed_dim=vit.embed_dim,
        depth=len(vit.blocks),
        num_heads=blk.attn.num_heads,
        mlp_hidden=blk.mlp.fc1.out_features,
        num_patches=vit.patch_embed.num_patches,
        num_prefix_tokens=vit.num_prefix_tokens,
        has_cls_token=vit.cls_token is not None,
        num_classes=head.out_features if isinstance(head, nn.Linear) else 0,
        patch_size=patch[0] if isinstance(patch, tuple) else patch,
        in_chans=vit.patch_embed.proj.in_channels,
        num_frames=getattr(vit.patch_embed, "num_frames", 1),
        tubelet_size=getattr(vit.patch_embed, "tubelet_size", 1),
        learned_pos_embed=isinstance(vit.pos_embed, nn.Parameter),
    )


def blocks(model: nn.Module) -> Iterator[tuple[int, Block]]:
    """Yield ``(index, block)`` for every transformer block of a checked ViT."""
    yield from enumerate(check_vit(model).blocks)


# ----------------------------------------------------------------------------------- blocks --
class PetlBlock(Block):
    """A timm ``Block`` with optional slot modules (see the module docstring).

    Without slots its forward is exactly timm's. ``mlp_branch`` reads ``norm2(x_a)`` unless the
    module sets ``reads_stream = True``, in which case it reads the un-normalised stream ``x_a``.
    """

    def _slot(self, name: str) -> nn.Module | None:
        return self._modules.get(name)

    @override
    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        slot = self._slot
        if (pre := slot("pre")) is not None:
            x = pre(x)
        h = self.norm1(x)
        a_in = h if (m := slot("attn_in")) is None else m(h)
        # keywords only when used: timm 1.0.23 (the lowest allowed) takes no is_causal (1.0.26+)
        extra = {"attn_mask": attn_mask} if attn_mask is not None else {}
        if is_causal:
            extra["is_causal"] = True
        y = self.ls1(self.attn(a_in, **extra))
        if (m := slot("attn_out")) is not None:
            y = m(y)
        out = x + self.drop_path1(y)
        if (m := slot("attn_branch")) is not None:
            out = out + m(h)
        x = out
        h = self.norm2(x)
        m_in = h if (m := slot("mlp_in")) is None else m(h)
        y = self.ls2(self.mlp(m_in))
        if (m := slot("mlp_out")) is not None:
            y = m(y)
        out = x + self.drop_path2(y)
        if (m := slot("mlp_branch")) is not None:
            out = out + m(x if getattr(m, "reads_stream", False) else h)
        if (post := slot("post")) is not None:
            out = post(out)
        return out


def set_slot(block: Block, slot: str, module: nn.Module) -> PetlBlock:
    """Put ``module`` into ``slot`` of ``block`` (converted in place to :class:`PetlBlock`).

    Raises:
        ValueError: unknown slot, or the slot is already taken (two methods would collide).
        NotAViTError: ``block`` is not a plain timm ``Block``.
    """
    if slot not in SLOTS:
        raise ValueError(f"unknown block slot {slot!r}; slots are {', '.join(SLOTS)}")
    if type(block) not in (Block, PetlBlock):
        raise NotAViTError(f"cannot adapt {type(block).__name__}; expected a timm Block")
    block.__class__ = PetlBlock
    if slot in block._modules:
        raise ValueError(f"block slot {slot!r} is already used by {type(block._modules[slot])}")
    block.add_module(slot, module)
    return block  # type: ignore[return-value]


def clear_slot(block: Block, slot: str) -> None:
    """Remove ``slot``; a block left with no slot becomes a plain timm ``Block`` again."""
    if slot in block._modules:
        del block._modules[slot]
    if isinstance(block, PetlBlock) and not any(s in block._modules for s in SLOTS):
        block.__class__ = Block


# ---------------------------------------------------------------------------------- linears --
class PetlLinear(nn.Linear):
    """``nn.Linear`` plus an additive ``delta`` module: ``y = W x + b + delta(x)``."""

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.delta(x)


def add_linear_delta(linear: nn.Linear, delta: nn.Module) -> PetlLinear:
    """Give ``linear`` an additive ``delta`` branch in place (weight and bias keep their keys)."""
    if type(linear) is not nn.Linear:
        raise NotAViTError(f"expected a plain nn.Linear, got {type(linear).__name__}")
    linear.__class__ = PetlLinear
    linear.add_module("delta", delta)
    return linear  # type: ignore[return-value]


@torch.no_grad()
def merge_linear(
    linear: nn.Linear, d_weight: torch.Tensor | None = None, d_bias: torch.Tensor | None = None
) -> nn.Linear:
    """Add ``d_weight``/``d_bias`` into ``linear`` and drop any ``delta``: a plain ``nn.Linear``."""
    if d_weight is not None:
        linear.weight.add_(d_weight.to(linear.weight.dtype))
    if d_bias is not None:
        if linear.bias is None:
            raise ValueError("cannot merge a bias delta into a Linear without bias")
        linear.bias.add_(d_bias.to(linear.bias.dtype))
    if isinstance(linear, PetlLinear):
        del linear._modules["delta"]
        linear.__class__ = nn.Linear
    return linear


@torch.no_grad()
def fold_affine_into_linear(linear: nn.Linear, m: torch.Tensor, c: torch.Tensor) -> None:
    """Fold a preceding affine map ``z ↦ M z + c`` into ``linear``.

    ``W (M z + c) + b = (W M) z + (b + W c)``: ``W ← W M``, ``b ← b + W c``. Used by methods that
    sit in series between a LayerNorm and ``qkv``/``fc1`` (ARC, RepAdapter).
    """
    if linear.bias is None:
        raise ValueError("folding an affine map needs a Linear with bias")
    w = linear.weight.double()
    new_b = linear.bias.double() + w @ c.double()
    linear.weight.copy_((w @ m.double()).to(linear.weight.dtype))
    linear.bias.copy_(new_b.to(linear.bias.dtype))


# ---------------------------------------------------------------------------------- outputs --
class _PetlOutput:
    """Mixin of the output-wrapped layers: the layer's original forward, then its wrapper child."""

    _petl_out: tuple[type, str]  # (original class, child name), set by wrap_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base, name = self._petl_out
        return self._modules[name](base.forward(self, x))


class PetlOutputLinear(_PetlOutput, nn.Linear):
    """An ``nn.Linear`` whose output goes through a child module (same ``weight``/``bias`` keys)."""


class PetlOutputLayerNorm(_PetlOutput, nn.LayerNorm):
    """A LayerNorm (nn or timm) whose output goes through a child module (same keys)."""


def wrap_output(layer: nn.Module, module: nn.Module, name: str) -> nn.Module:
    """Make ``layer`` compute ``module(layer(x))``, in place: ``module`` becomes child ``name``.

    ``layer``'s class is swapped to :class:`PetlOutputLinear` (a plain ``nn.Linear``) or
    :class:`PetlOutputLayerNorm` (any ``nn.LayerNorm``, e.g. timm's); its forward is the original
    class's, then ``module``. Backbone keys stay; ``module``'s tensors appear under
    ``<layer>.<name>.``. :func:`unwrap_output` undoes it.

    Raises:
        NotAViTError: ``layer`` is neither a plain ``nn.Linear`` nor a LayerNorm, or is already
            wrapped.
    """
    base = type(layer)
    if base is nn.Linear:
        new: type = PetlOutputLinear
    elif isinstance(layer, nn.LayerNorm) and not isinstance(layer, _PetlOutput):
        new = PetlOutputLayerNorm
    else:
        raise NotAViTError(
            f"cannot wrap the output of a {base.__name__} (expected nn.Linear/LayerNorm)"
        )
    if name in layer._modules or hasattr(layer, name):
        raise ValueError(f"{base.__name__} already has an attribute {name!r}")
    layer.__class__ = new
    layer._petl_out = (base, name)
    layer.add_module(name, module)
    return layer


def output_wrapper(layer: nn.Module) -> nn.Module | None:
    """The module :func:`wrap_output` put after ``layer``, or ``None``."""
    if not isinstance(layer, _PetlOutput):
        return None
    return layer._modules[layer._petl_out[1]]


def unwrap_output(layer: nn.Module) -> nn.Module:
    """Undo :func:`wrap_output`: remove and return the wrapper; ``layer`` gets its class back."""
    if not isinstance(layer, _PetlOutput):
        raise ValueError(f"{type(layer).__name__} has no wrapped output")
    base, name = layer.__dict__.pop("_petl_out")
    module = layer._modules.pop(name)
    layer.__class__ = base
    return module


def qkv_rows(dims: Dims | int, which: str) -> slice:
    """Rows of the fused ``qkv`` weight that produce ``which``.

    Args:
        dims: the backbone's :class:`Dims` or its embedding width D.
        which: ``"q"``, ``"k"``, ``"v"``, or adjacent ones fused (``"qk"``, ``"kv"``, ``"qkv"``).
    """
    d = dims.embed_dim if isinstance(dims, Dims) else dims
    if which not in ("q", "k", "v", "qk", "kv", "qkv"):
        raise ValueError(f"qkv_rows: {which!r} is not 'q', 'k', 'v' or adjacent ones fused")
    idx = "qkv".index(which)
    return slice(idx * d, (idx + len(which)) * d)


# ------------------------------------------------------------------------------------ shared --
def share(holder: nn.Module, name: str, owner: nn.Module) -> None:
    """Let ``holder`` use ``owner``'s parameters without registering ``owner`` as its child.

    Shared tensors (ARC's projections, FacT's factors) must live in one place in the
    ``state_dict``; each per-block module keeps a plain reference. ``deepcopy`` keeps the sharing.
    """
    object.__setattr__(holder, name, owner)
