"""RepAdapter: a linear, re-parameterisable adapter in series before attention and MLP.

*Towards Efficient Visual Adaption via Structural Re-parameterization* (Luo et al., arXiv 2023)
https://arxiv.org/abs/2302.08106 — code: https://github.com/luogen1996/RepAdapter

``R(z) = z + s·(W_B Drop(W_A z + b_A) + b_B)``, W_A: D→r dense, W_B: r→D group-wise with g groups
(block-diagonal: hidden chunk i of r/g units feeds output chunk i of D/g features, the layout of
``nn.Conv1d(r, D, 1, groups=g)``); no non-linearity. Where it sits in a timm ``Block``
(``attn_in`` / ``mlp_in`` slots)::

    x ─┬─ norm1 ─ R_att ─ attn ─ drop_path1 ─(+)─┬─ norm2 ─ R_mlp ─ mlp ─ drop_path2 ─(+)─▶
       └────────────── residual ─────────────────┘└────────────── residual ────────────┘

Count per adapter: ``D·r + r + D·r/g + D``; ``2·depth·(...)`` (ViT-B/16, r=8, g=2: 239,808);
``depth·(...)`` with ``placement="attn"`` (preset ``attn``, the official ``repattn``). The
published 0.22 M matches the weights without biases (221,184).

Init: W_A xavier-uniform, b_A = 0, W_B = 0, b_B = 0 → identity at init.

Merge: ``R(z) = M z + c`` with ``M = I + s·W_B W_A`` and ``c = s·(W_B b_A + b_B)`` (W_B dense
block-diagonal), folded into the following ``attn.qkv`` / ``mlp.fc1``: ``W ← W M``,
``b ← b + W c``.

Default scale: the official VTAB configs pick s per task from {0.1, 0.5, 1, 5, 10}
(``configs/repblock/*.yaml``: 0.1 ×6, 0.5 ×2, 1 ×4, 5 ×5, 10 ×2), selected on the test split by
``scripts/search_repblock.sh``. pebench uses the median, s = 1; set it with ``--set scale=...``.

Deliberate deviations (official-code issues not copied):
    * Both branches use their own drop-path (official: ``drop_path1`` twice; equal rates).
    * No ``--sparse_lambda`` L2 penalty on W_B (argparse default 1.0, scripts pass 0).
    * Merging works for any g, including g = 1 (the official ``set_RepWeight`` crashes there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from typing_extensions import override

from pebench.method import Caps, Method, MethodConfigError, at_least_one, dropout_rate
from pebench.vit import Dims, PetlModule, blocks, clear_slot, fold_affine_into_linear, set_slot


class RepAdapterModule(PetlModule):
    """``z + s·(W_B Drop(W_A z + b_A) + b_B)`` with a group-wise W_B.

    Args:
        dim: feature width ``D`` (divisible by ``groups``).
        rank: hidden width ``r`` (divisible by ``groups``).
        groups: number of groups ``g`` of W_B.
        scale: output scale ``s``.
        dropout: dropout on the hidden activations.
    """

    def __init__(self, dim: int, rank: int, groups: int, scale: float, dropout: float):
        super().__init__()
        if dim % groups or rank % groups:
            raise ValueError(
                f"RepAdapter groups={groups} must divide both the embedding width D={dim} and "
                f"the rank r={rank}"
            )
        self.dim, self.rank, self.groups, self.scale = dim, rank, groups, scale
        self.down = nn.Linear(dim, rank)
        self.dropout = nn.Dropout(dropout)
        # weight_b[o, j]: output feature o reads hidden unit (o // (D/g))·(r/g) + j (Conv1d layout)
        self.weight_b = nn.Parameter(torch.zeros(dim, rank // groups))
        self.bias_b = nn.Parameter(torch.zeros(dim))
        with torch.no_grad():
            nn.init.xavier_uniform_(self.down.weight)
            nn.init.zeros_(self.down.bias)

    def _up(self, h: torch.Tensor) -> torch.Tensor:
        g = self.groups
        h = h.unflatten(-1, (g, self.rank // g))  # (..., g, r/g)
        w = self.weight_b.reshape(g, self.dim // g, self.rank // g)  # (g, D/g, r/g)
        return torch.einsum("...gj,goj->...go", h, w).flatten(-2) + self.bias_b

    def dense_b(self) -> torch.Tensor:
        """W_B as a dense (D × r) block-diagonal matrix."""
        g = self.groups
        return torch.block_diag(*self.weight_b.reshape(g, self.dim // g, self.rank // g))

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(M, c)`` with ``R(z) = M z + c`` (float64, for merging)."""
        wa, ba = self.down.weight.double(), self.down.bias.double()
        wb, bb = self.dense_b().double(), self.bias_b.double()
        eye = torch.eye(self.dim, dtype=torch.float64, device=wa.device)
        return eye + self.scale * wb @ wa, self.scale * (wb @ ba + bb)

    @override
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.scale * self._up(self.dropout(self.down(z)))


class RepAdapter(Method):
    """RepAdapter before attention and MLP of every block (or attention only)."""

    name = "repadapter"
    title = "Towards Efficient Visual Adaption via Structural Re-parameterization"
    paper_url = "https://arxiv.org/abs/2302.08106"
    code_url = "https://github.com/luogen1996/RepAdapter"
    caps = Caps(identity_at_init=True, mergeable=True)
    presets = {"attn": {"placement": "attn"}}

    @dataclass(frozen=True)
    class Config(Method.Config):
        """RepAdapter options.

        Attributes:
            r: hidden width.
            groups: groups ``g`` of the up-projection (must divide r and D).
            scale: output scale ``s``.
            dropout: dropout on the hidden activations.
            placement: ``"block"`` (before attention and MLP) or ``"attn"`` (attention only).
        """

        r: int = at_least_one(8)
        groups: int = at_least_one(2)
        scale: float = 1.0
        dropout: float = dropout_rate(0.1)
        placement: Literal["block", "attn"] = "block"

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.r % self.groups:
                raise MethodConfigError(f"groups={self.groups} must divide r={self.r}")

    def _slots(self) -> list[str]:
        return ["attn_in", "mlp_in"] if self.config.placement == "block" else ["attn_in"]

    @override
    def attach(self, model: nn.Module) -> nn.Module:
        c = self.config
        for _, blk in blocks(model):
            dim = blk.attn.qkv.in_features
            for slot in self._slots():
                set_slot(blk, slot, RepAdapterModule(dim, c.r, c.groups, c.scale, c.dropout))
        return model

    @override
    def expected_num_params(self, dims: Dims) -> int:
        d, r, g = dims.embed_dim, self.config.r, self.config.groups
        return len(self._slots()) * dims.depth * (d * r + r + d * r // g + d)

    @torch.no_grad()
    @override
    def merge(self, model: nn.Module) -> nn.Module:
        for _, blk in blocks(model):
            targets = {"attn_in": blk.attn.qkv, "mlp_in": blk.mlp.fc1}
            for slot in self._slots():
                m, c = blk._modules[slot].affine()
                fold_affine_into_linear(targets[slot], m, c)
                clear_slot(blk, slot)
        return model
