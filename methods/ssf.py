"""SSF: scale and shift the features after every operation of a frozen ViT.

*Scaling & Shifting Your Features: A New Baseline for Efficient Model Tuning* (Lian, Zhou, Feng,
Wang, NeurIPS 2022) — https://arxiv.org/abs/2210.07558 — code: https://github.com/dongzelian/SSF

``ssf(h) = γ ⊙ h + β`` (γ, β ∈ R^width, broadcast over tokens) after each marked operation::

    patch_embed.proj ─ flatten ─ [ssf D] ─ +pos ─ blocks ─ norm ─ [ssf D] ─ pool ─ head
    block:  norm1 ─[ssf D]─ qkv ─[ssf 3D]─ attention ─ proj ─[ssf D]─ (+)
            norm2 ─[ssf D]─ fc1 ─[ssf hidden]─ GELU ─ fc2 ─[ssf D]─ (+)

Avg-pool backbones (``norm`` = Identity, mean pooling, then ``fc_norm``; the VideoMAE layout too)
get the final SSF where the official code puts it, after ``norm``: on every token, **before**
pooling and ``fc_norm`` (``ssf_scale_1``/``ssf_shift_1`` follow ``self.norm`` in the official
``forward_features``). There it changes what ``fc_norm`` normalises; after ``fc_norm`` the head
would absorb it (2·D parameters that add nothing). The count is the same either way.

Where the modules live (backbone keys unchanged): after ``norm1``/``norm2`` in the ``attn_in``/
``mlp_in`` slots of :class:`~pebench.vit.PetlBlock`; after ``qkv``/``proj``/``fc1``/``fc2`` and the
final LayerNorm (cls-token backbones) as an ``ssf`` child of the layer
(:func:`pebench.vit.wrap_output`: the layer's class is swapped in place, original forward then
``ssf``); after the patch embedding in ``patch_embed.norm`` and, on avg-pool backbones, in
``norm`` (Identities in timm ViTs, replaced; a LayerNorm there is wrapped).

Init γ ~ N(1, 0.02²), β ~ N(0, 0.02²): close to, not exactly, the backbone (not identity at init).
Count: depth·2·(D + 3D + D + D + hidden + D) + 2·2·D (ViT-B/16: 12·2·8448 + 4·768 = 205,824).
Merge (exact): after a Linear ``W ← diag(γ) W``, ``b ← γ ⊙ b + β``; after a LayerNorm
``weight ← γ ⊙ weight``, ``bias ← γ ⊙ bias + β``; after ``patch_embed`` scale the conv's output
channels and bias likewise. The merged model is a plain timm ViT again. On avg-pool backbones the
final SSF sits between the residual stream and ``fc_norm``, where nothing can absorb it: SSF is
not mergeable there (:meth:`SSF.mergeable_on`; merge raises) and its parameters count as
inference cost, the price of the official placement.

Deviations: none in the method. Backbone weights and normalisation come from the budget (the
official code uses AugReg IN-21k weights with 0.5/0.5 normalisation). Layers without a bias
(``qkv_bias=False``, bias-free ``patch_embed``) train fine but cannot be merged (merge raises).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from typing_extensions import override

from pebench.method import Caps, Method, option
from pebench.vit import (
    Dims,
    NotAViTError,
    PetlModule,
    blocks,
    check_vit,
    clear_slot,
    output_wrapper,
    set_slot,
    unwrap_output,
    wrap_output,
)


class ScaleShift(PetlModule):
    """``γ ⊙ h + β`` over the last dimension, γ ~ N(1, std²), β ~ N(0, std²).

    Args:
        dim: width of the last dimension.
        like: a backbone tensor whose device and dtype the parameters take.
        std: init standard deviation of γ and β.
    """

    def __init__(self, dim: int, like: torch.Tensor, std: float = 0.02):
        super().__init__()
        kw = {"device": like.device, "dtype": like.dtype}
        self.scale = nn.Parameter(torch.empty(dim, **kw).normal_(1.0, std))
        self.shift = nn.Parameter(torch.empty(dim, **kw).normal_(0.0, std))

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def wrap_ssf(layer: nn.Module, ssf: ScaleShift) -> None:
    """Put ``ssf`` after ``layer`` as its ``ssf`` child (:func:`~pebench.vit.wrap_output`).

    Raises:
        NotAViTError: ``layer`` is not a plain ``nn.Linear`` or an affine LayerNorm, or is
            already wrapped.
    """
    if isinstance(layer, nn.LayerNorm) and not layer.elementwise_affine:
        raise NotAViTError(f"SSF needs an affine LayerNorm, got {layer}")
    wrap_output(layer, ssf, "ssf")


@torch.no_grad()
def fold_scale_shift(layer: nn.Module, ssf: ScaleShift) -> None:
    """``weight ← γ ⊙ weight`` (along output channels), ``bias ← γ ⊙ bias + β``, in place."""
    gamma = ssf.scale.to(layer.weight.dtype)
    layer.weight.mul_(gamma.view(-1, *([1] * (layer.weight.dim() - 1))))
    layer.bias.mul_(gamma).add_(ssf.shift.to(layer.bias.dtype))


def final_norm(model: nn.Module) -> tuple[str, nn.LayerNorm]:
    """The last LayerNorm before the head: ``norm`` (token pooling) or ``fc_norm`` (avg pooling).

    Raises:
        NotAViTError: the backbone has no final LayerNorm.
    """
    for attr in ("norm", "fc_norm"):
        mod = getattr(model, attr)
        if isinstance(mod, nn.LayerNorm):
            return attr, mod
    raise NotAViTError("SSF needs a final LayerNorm (`norm` or `fc_norm`); this ViT has neither")


def pre_pool(model: nn.Module) -> bool:
    """Whether the final SSF goes before pooling (``norm`` is an Identity: avg-pool backbones)."""
    return final_norm(model)[0] == "fc_norm" and isinstance(model.norm, nn.Identity | ScaleShift)


class SSF(Method):
    """Scale-and-shift after patch embedding, norm1, qkv, proj, norm2, fc1, fc2 and final norm."""

    name = "ssf"
    title = "Scaling & Shifting Your Features: A New Baseline for Efficient Model Tuning"
    paper_url = "https://arxiv.org/abs/2210.07558"
    code_url = "https://github.com/dongzelian/SSF"
    caps = Caps(identity_at_init=False, mergeable=True)

    @dataclass(frozen=True)
    class Config(Method.Config):
        """SSF options.

        Attributes:
            init_std: standard deviation of the N(1, std²) scale and N(0, std²) shift init.
        """

        init_std: float = option(0.02, ge=0.0)

    def _ssf(self, dim: int, like: torch.Tensor) -> ScaleShift:
        return ScaleShift(dim, like, self.config.init_std)

    @override
    def attach(self, model: nn.Module) -> nn.Module:
        vit = check_vit(model)
        if any(isinstance(m, ScaleShift) for m in vit.modules()):
            raise ValueError("SSF is already attached to this model")
        attr, last = final_norm(vit)  # fail before touching anything
        if not last.elementwise_affine:
            raise NotAViTError(f"SSF needs an affine final LayerNorm, `{attr}` has no γ/β")
        pe = vit.patch_embed
        d = pe.proj.out_channels
        if isinstance(pe.norm, nn.Identity):
            pe.norm = self._ssf(d, pe.proj.weight)
        else:
            wrap_ssf(pe.norm, self._ssf(d, pe.proj.weight))
        for _, blk in blocks(vit):
            qkv, fc1 = blk.attn.qkv, blk.mlp.fc1
            set_slot(blk, "attn_in", self._ssf(qkv.in_features, qkv.weight))
            set_slot(blk, "mlp_in", self._ssf(fc1.in_features, fc1.weight))
            for lin in (qkv, blk.attn.proj, fc1, blk.mlp.fc2):
                wrap_ssf(lin, self._ssf(lin.out_features, lin.weight))
        if pre_pool(vit):  # official placement: on the tokens, before pooling and fc_norm
            vit.norm = self._ssf(last.weight.numel(), last.weight)
        else:
            wrap_ssf(last, self._ssf(last.weight.numel(), last.weight))
        return vit

    @override
    def mergeable_on(self, model: nn.Module) -> bool:
        return not pre_pool(check_vit(model))

    @override
    def expected_num_params(self, dims: Dims) -> int:
        d, h = dims.embed_dim, dims.mlp_hidden
        per_block = d + 3 * d + d + d + h + d  # norm1, qkv, proj, norm2, fc1, fc2
        return dims.depth * 2 * per_block + 2 * 2 * d  # + patch_embed, final norm

    @staticmethod
    def _folds(vit: nn.Module) -> list[tuple[str, nn.Module, ScaleShift]]:
        """Every (name, layer to fold into, its SSF) of an attached model."""
        pe = vit.patch_embed
        out = [
            ("patch_embed.proj", pe.proj, pe.norm)
            if isinstance(pe.norm, ScaleShift)
            else ("patch_embed.norm", pe.norm, pe.norm.ssf)
        ]
        for i, blk in blocks(vit):
            out += [
                (f"blocks.{i}.norm1", blk.norm1, blk.attn_in),
                (f"blocks.{i}.norm2", blk.norm2, blk.mlp_in),
            ]
            for lname in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
                lin = blk.get_submodule(lname)
                out.append((f"blocks.{i}.{lname}", lin, lin.ssf))
        attr, last = final_norm(vit)
        return out + [(attr, last, last.ssf)]  # cls-token backbones (pre-pool ones do not merge)

    @torch.no_grad()
    @override
    def merge(self, model: nn.Module) -> nn.Module:
        vit = check_vit(model)
        if pre_pool(vit):
            raise ValueError(
                "SSF is not mergeable on an average-pool backbone: its final scale-shift acts on "
                "the tokens before pooling and fc_norm (the official placement), where no weight "
                "can absorb it"
            )
        folds = self._folds(vit)
        for where, layer, _ in folds:  # check everything before changing anything
            if getattr(layer, "bias", None) is None:
                raise ValueError(f"SSF cannot merge into {where}: it has no bias to absorb β")
        for _, layer, ssf in folds:
            fold_scale_shift(layer, ssf)
            if output_wrapper(layer) is not None:
                unwrap_output(layer)
        if isinstance(vit.patch_embed.norm, ScaleShift):
            vit.patch_embed.norm = nn.Identity()
        for _, blk in blocks(vit):
            clear_slot(blk, "attn_in")
            clear_slot(blk, "mlp_in")
        return vit
