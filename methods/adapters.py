"""Serial bottleneck adapters: Houlsby (two per block) and Pfeiffer (one per block, after the MLP).

Houlsby: *Parameter-Efficient Transfer Learning for NLP* (Houlsby et al., ICML 2019)
https://arxiv.org/abs/1902.00751 — code: https://github.com/google-research/adapter-bert

Pfeiffer: *AdapterFusion: Non-Destructive Task Composition for Transfer Learning* (Pfeiffer et al.,
EACL 2021) https://arxiv.org/abs/2005.00247 — code: https://github.com/adapter-hub/adapters

Both wrap a sub-layer output ``y`` with a bottleneck that has its own skip connection,
``y ← y + s·A(y)`` with ``A(y) = W_up σ(W_down y + b_down) + b_up``, before the block's residual
add. Where they sit in a timm ``Block`` (``attn_out`` / ``mlp_out`` slots)::

    x ─┬─ norm1 ─ attn ─ ls1 ─[y + s·A_att(y)]─ drop_path1 ─(+)─┬─ norm2 ─ mlp ─ ls2 ─ ...
       └────────────────────── residual ─────────────────────────┘     (Houlsby only)
    ... ─[y + s·A_mlp(y)]─ drop_path2 ─(+)─▶                           (Houlsby and Pfeiffer)

Count per adapter: ``2·D·r + r + D``. Houlsby ``2·depth·(2·D·r + r + D)`` (ViT-B/16, r=8:
313,536); Pfeiffer ``depth·(2·D·r + r + D)`` (156,768). Neither is mergeable (σ is non-linear).

Houlsby defaults: σ = GELU, s = 1, dropout 0, near-identity init — both projections truncated
normal (std 0.01, cut at ±2σ), biases 0 (the paper's value, as in ``visinf/adapter_plus``). The
model is therefore *close to*, not exactly, the backbone at init (``identity_at_init=False``).

Pfeiffer defaults: the NOAH / PETL_Vision placement (input = MLP output, internal skip), σ = GELU,
s = 1, bottleneck dropout 0.1, down kaiming-uniform(a=√5) / up zero: exactly identity at init.

Deliberate deviations:
    * The adapted sub-layer output passes through the block's drop-path together with the
      adapter (``x + DP(y + s·A(y))``); NOAH applies the adapter after drop-path and the
      original Houlsby model has no drop-path. Identical in eval mode and at drop-path 0.
    * Houlsby's paper also trains the LayerNorms; pebench trains adapter weights only.
    * Pfeiffer: no adapter-internal LayerNorm (``visinf/adapter_plus`` variant, +2·D per block);
      ``KMnP/vpt``'s all-zero init (weights never receive gradient) is not copied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from typing_extensions import override

from pebench.layers import ACTIVATIONS, Bottleneck
from pebench.method import Caps, Method, at_least_one, dropout_rate, option
from pebench.vit import Dims, PetlModule, blocks, set_slot


class ResidualAdapter(PetlModule):
    """``y + s·A(y)`` with ``A`` a :class:`~pebench.layers.Bottleneck` (GELU by default).

    Args:
        dim: feature width.
        rank: bottleneck width ``r``.
        scale: output scale ``s``.
        dropout: dropout on the bottleneck activations.
        act: activation name.
        init: ``"lora"`` (down kaiming-uniform, up zero: identity) or ``"near_identity"``
            (both projections truncated normal std 0.01 cut at ±2σ, biases 0).
    """

    def __init__(
        self, dim: int, rank: int, scale: float, dropout: float, act: str, init: str = "lora"
    ):
        super().__init__()
        self.scale = scale
        self.adapter = Bottleneck(dim, rank, act=act, dropout=dropout)
        if init == "near_identity":
            with torch.no_grad():
                for lin in (self.adapter.down, self.adapter.up):
                    nn.init.trunc_normal_(lin.weight, std=0.01, a=-0.02, b=0.02)
                    nn.init.zeros_(lin.bias)
        elif init != "lora":
            raise ValueError(f"unknown adapter init {init!r}; choose 'lora' or 'near_identity'")

    @override
    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.scale * self.adapter(y)


class HoulsbyAdapter(Method):
    """Two serial bottleneck adapters per block (after attention and after the MLP)."""

    name = "adapter_houlsby"
    title = "Parameter-Efficient Transfer Learning for NLP"
    paper_url = "https://arxiv.org/abs/1902.00751"
    code_url = "https://github.com/google-research/adapter-bert"
    caps = Caps(identity_at_init=False, mergeable=False)

    @dataclass(frozen=True)
    class Config(Method.Config):
        """Houlsby adapter options.

        Attributes:
            r: bottleneck width.
            scale: output scale ``s`` of each adapter.
            dropout: dropout on the bottleneck activations.
            act: activation (see :data:`pebench.layers.ACTIVATIONS`).
        """

        r: int = at_least_one(8)
        scale: float = 1.0
        dropout: float = dropout_rate(0.0)
        act: str = option("gelu", choices=tuple(ACTIVATIONS))

    @override
    def attach(self, model: nn.Module) -> nn.Module:
        c = self.config
        for _, blk in blocks(model):
            dim = blk.attn.qkv.in_features
            for slot in ("attn_out", "mlp_out"):
                mod = ResidualAdapter(dim, c.r, c.scale, c.dropout, c.act, init="near_identity")
                set_slot(blk, slot, mod)
        return model

    @override
    def expected_num_params(self, dims: Dims) -> int:
        d, r = dims.embed_dim, self.config.r
        return 2 * dims.depth * (2 * d * r + r + d)


class PfeifferAdapter(Method):
    """One serial bottleneck adapter per block, on the MLP output."""

    name = "adapter_pfeiffer"
    title = "AdapterFusion: Non-Destructive Task Composition for Transfer Learning"
    paper_url = "https://arxiv.org/abs/2005.00247"
    code_url = "https://github.com/adapter-hub/adapters"
    caps = Caps(identity_at_init=True, mergeable=False)

    @dataclass(frozen=True)
    class Config(Method.Config):
        """Pfeiffer adapter options.

        Attributes:
            r: bottleneck width.
            scale: output scale ``s``.
            dropout: dropout on the bottleneck activations.
            act: activation (see :data:`pebench.layers.ACTIVATIONS`).
        """

        r: int = at_least_one(8)
        scale: float = 1.0
        dropout: float = dropout_rate(0.1)
        act: str = option("gelu", choices=tuple(ACTIVATIONS))

    @override
    def attach(self, model: nn.Module) -> nn.Module:
        c = self.config
        for _, blk in blocks(model):
            dim = blk.attn.qkv.in_features
            set_slot(blk, "mlp_out", ResidualAdapter(dim, c.r, c.scale, c.dropout, c.act))
        return model

    @override
    def expected_num_params(self, dims: Dims) -> int:
        d, r = dims.embed_dim, self.config.r
        return dims.depth * (2 * d * r + r + d)
