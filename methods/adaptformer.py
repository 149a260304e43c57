"""AdaptFormer: a scaled ReLU bottleneck parallel to the MLP, fed by the raw residual stream.

*AdaptFormer: Adapting Vision Transformers for Scalable Visual Recognition* (Chen et al.,
NeurIPS 2022) https://arxiv.org/abs/2205.13535 — code: https://github.com/ShoufaChen/AdaptFormer

Where it sits in a timm ``Block`` (slot ``mlp_branch`` with ``reads_stream = True``)::

    x_a = x + drop_path1(attn(norm1(x)))
    x_a ─┬─ norm2 ─ mlp ─ drop_path2 ─────────────────────────(+)─▶ x_out
         ├─ down ─ ReLU ─ Dropout ─ up ─ ·s ───────────────────(+)
         └──────────────────── residual ───────────────────────(+)

``x_out = x_a + drop_path2(mlp(norm2(x_a))) + s·(W_up Dropout(ReLU(W_down x_a + b_down)) + b_up)``

* the adapter reads the **un-normalised** stream ``x_a`` (not ``norm2(x_a)``), has no LayerNorm,
  and is added **outside** drop-path;
* ``s = 0.1`` is fixed and multiplies the up-projection bias too; dropout 0.1 on the bottleneck
  activations (the official image setting; video uses 0.0: ``--set dropout=0``);
* "lora" init: ``W_down`` kaiming-uniform(a=√5), biases 0, ``W_up = 0`` → identity at init.

Count: depth·(2·D·r + r + D). ViT-B/16: r=8 → 156,768 (preset ``r8``, the VTAB-1k convention and
the default); r=64 → 1,189,632 (preset ``r64``, the paper's ``--ffn_num``). Not mergeable: the ReLU
branch reads the raw stream and no frozen Linear consumes ``x_a`` alone.

Deliberate deviations from the official code:

* plain Linear head on the pooled pre-logits instead of ``BatchNorm1d(affine=False)`` + Linear
  (shared pebench rule);
* default r=8 (VTAB convention) instead of the code's ``--ffn_num 64`` (available as ``r64``);
* not copied: the ``adapter_layernorm_option="in"`` class default (the official scripts pass
  ``"none"``), the unimplemented ``"bert"`` init, and drop-path on the adapter branch (a common
  re-implementation error; the official block adds the adapter after drop-path).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from typing_extensions import override

from pebench.layers import Bottleneck
from pebench.method import Caps, Method, at_least_one, dropout_rate
from pebench.vit import Dims, blocks, set_slot


class AdaptMLP(Bottleneck):
    """``s · (W_up Dropout(ReLU(W_down x + b_down)) + b_up)`` on the raw stream ``x_a``.

    Args:
        dim: embedding width D.
        rank: bottleneck width r.
        scale: fixed (not learned) output scale ``s``; it multiplies the up bias as well.
        dropout: dropout probability on the ReLU activations.
    """

    #: read the post-attention stream ``x_a`` instead of ``norm2(x_a)`` (see ``PetlBlock``)
    reads_stream = True

    def __init__(self, dim: int, rank: int, scale: float, dropout: float):
        super().__init__(dim, rank, act="relu", dropout=dropout, up_bias=True)
        self.scale = scale

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * super().forward(x)

    @override
    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class AdaptFormer(Method):
    """AdaptFormer's parallel adapter (AdaptMLP) in every block."""

    name = "adaptformer"
    title = "AdaptFormer: Adapting Vision Transformers for Scalable Visual Recognition"
    paper_url = "https://arxiv.org/abs/2205.13535"
    code_url = "https://github.com/ShoufaChen/AdaptFormer"
    caps = Caps(identity_at_init=True, mergeable=False)
    presets = {"r8": {"r": 8}, "r64": {"r": 64}}

    @dataclass(frozen=True)
    class Config(Method.Config):
        """AdaptFormer options.

        Attributes:
            r: bottleneck width (``--ffn_num`` of the official code).
            scale: fixed output scale ``s`` (hard-coded 0.1 in the official code).
            dropout: dropout on the bottleneck activations (0.1 images, 0.0 video).
        """

        r: int = at_least_one(8)
        scale: float = 0.1
        dropout: float = dropout_rate(0.1)

    @override
    def attach(self, model: nn.Module) -> nn.Module:
        c = self.config
        for _, blk in blocks(model):
            dim = blk.mlp.fc1.in_features
            set_slot(blk, "mlp_branch", AdaptMLP(dim, c.r, c.scale, c.dropout))
        return model

    @override
    def expected_num_params(self, dims: Dims) -> int:
        d, r = dims.embed_dim, self.config.r
        return dims.depth * (2 * d * r + r + d)
