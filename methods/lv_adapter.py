"""Lv-Adapter — PEBENCH RECONSTRUCTION: only the paper's abstract is public.

*Lv-Adapter: Adapting Vision Transformers for Visual Classification with Linear-layers and
Vectors* (Xu, Ye, Liu, Wen, Li, Wang — CVIU 2024) https://doi.org/10.1016/j.cviu.2024.104049 —
no official code has been released.

**Every architectural detail in this file is a pebench assumption, not the paper's method.** The
abstract says only that the adapter "consists of a linear layer and vector", learns "both the prior
knowledge of pre-trained task and the information from downstream specific task", adds "about 3 %"
(elsewhere "3.5 %") extra parameters to ViT, and is plug-and-play. Everything below — placement,
low rank, no activation, dropout, init, the per-channel vector, its position and the rank — is a
reconstruction (``methods.md`` §2.5) and must be replaced if the paper or code becomes available.
Results of this method are never comparable with the paper's numbers.

Reconstruction, placed where AdaptFormer attaches (slot ``mlp_branch``, ``reads_stream = True``)::

    x_a = x + drop_path1(attn(norm1(x)))
    x_a ─┬─ norm2 ─ mlp ─ drop_path2 ───────────────────────────(+)─▶ x_out
         ├─ down ─ Dropout ─ up(no bias) ─ ⊙v ─ +b_up ───────────(+)      vector="branch"
         └───────────────────── residual ────────────────────────(+)

``vector="branch"`` (default): ``g = v ⊙ (W_up Dropout(W_down x_a + b_down)) + b_up`` and
``x_out = x_a + drop_path2(mlp(norm2(x_a))) + g``.

``vector="mlp"`` (same count): the vector rescales the frozen MLP output instead (slot
``mlp_out``), reading "vector = prior knowledge" literally:
``x_out = x_a + v ⊙ drop_path2(mlp(norm2(x_a))) + W_up Dropout(W_down x_a + b_down) + b_up``.

Init: ``W_down`` kaiming-uniform(a=√5), ``b_down = 0``, ``W_up = 0``, ``b_up = 0``, ``v = 1`` →
identity at init. Count: depth·(2·D·r + r + 2·D). ViT-B/16: r=140 (default) → 2,600,592 (3.03 % of
85.8 M, "about 3 %"); preset ``r160`` → 2,969,472 (3.46 %, "3.5 %"). Not mergeable: the branch is
linear but reads the raw stream, so it would stay an extra dense map per block at inference.

Deliberate deviations: none can be stated (no code, no method description). Assumption beyond
``methods.md`` §2.5: the bottleneck dropout (0.1) also applies in the ``vector="mlp"`` variant, so
the two variants differ only in where ``v`` acts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from typing_extensions import override

from pebench.layers import Bottleneck
from pebench.method import Caps, Method, at_least_one, dropout_rate
from pebench.vit import Dims, PetlModule, blocks, set_slot


class LinearBranch(Bottleneck):
    """Reconstructed branch ``[v ⊙] (W_up Dropout(W_down x + b_down)) + b_up`` on ``x_a``.

    Args:
        dim: embedding width D.
        rank: low-rank width r (no activation between the two maps).
        dropout: dropout on the ``r``-dimensional code.
        with_vector: whether the per-channel vector ``v`` (init 1) multiplies the branch.
    """

    #: read the post-attention stream ``x_a`` instead of ``norm2(x_a)`` (see ``PetlBlock``)
    reads_stream = True

    def __init__(self, dim: int, rank: int, dropout: float, with_vector: bool):
        super().__init__(dim, rank, act="identity", dropout=dropout, up_bias=False)
        self.bias = nn.Parameter(torch.zeros(dim))
        self.vector = nn.Parameter(torch.ones(dim)) if with_vector else None

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if self.vector is not None:
            y = y * self.vector
        return y + self.bias


class ChannelScale(PetlModule):
    """``v ⊙ y`` with a learnable per-channel vector ``v`` (init 1); used on the MLP output."""

    def __init__(self, dim: int):
        super().__init__()
        self.vector = nn.Parameter(torch.ones(dim))

    @override
    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.vector


class LvAdapter(Method):
    """Lv-Adapter as reconstructed by pebench (see the module docstring: all details assumed)."""

    name = "lv_adapter"
    title = "Lv-Adapter (pebench reconstruction; only the abstract is public)"
    paper_url = "https://doi.org/10.1016/j.cviu.2024.104049"
    code_url = ""
    reconstruction = True
    caps = Caps(identity_at_init=True, mergeable=False)
    presets = {"r160": {"r": 160}}

    @dataclass(frozen=True)
    class Config(Method.Config):
        """Lv-Adapter reconstruction options.

        Attributes:
            r: rank of the linear map (140 ≈ 3 % of ViT-B/16; 160 ≈ 3.5 %).
            dropout: dropout on the rank-r code.
            vector: ``"branch"`` (v scales the branch) or ``"mlp"`` (v scales the frozen MLP).
        """

        r: int = at_least_one(140)
        dropout: float = dropout_rate(0.1)
        vector: Literal["branch", "mlp"] = "branch"

    @override
    def attach(self, model: nn.Module) -> nn.Module:
        c = self.config
        on_branch = c.vector == "branch"
        for _, blk in blocks(model):
            dim = blk.mlp.fc1.in_features
            set_slot(blk, "mlp_branch", LinearBranch(dim, c.r, c.dropout, with_vector=on_branch))
            if not on_branch:
                # v ⊙ drop_path2(y) == drop_path2(v ⊙ y): drop-path scales whole samples
                set_slot(blk, "mlp_out", ChannelScale(dim))
        return model

    @override
    def expected_num_params(self, dims: Dims) -> int:
        d, r = dims.embed_dim, self.config.r
        return dims.depth * (2 * d * r + r + 2 * d)
