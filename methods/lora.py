"""LoRA: low-rank updates of the query and value projections.

*LoRA: Low-Rank Adaptation of Large Language Models* (Hu et al., ICLR 2022)
https://arxiv.org/abs/2106.09685 — code: https://github.com/microsoft/LoRA

Where it sits in a timm ``Block`` (the fused ``attn.qkv`` Linear gains an additive delta)::

    norm1(x) ──▶ qkv ──▶ [q | k | v] ──▶ attention
              └─ Dropout ─ A_q ─ B_q ─ ·α/r ─▶ + q
              └─ Dropout ─ A_v ─ B_v ─ ·α/r ─▶ + v

``q = W_q x + b_q + (α/r)·B_q A_q Dropout(x)`` (same for v); A kaiming-uniform(a=√5), B = 0, so
the model is the backbone at init. Count: depth·4·D·r (ViT-B/16, r=8: 294,912). Mergeable:
``W ← W + (α/r)·B A`` on the q and v rows of ``qkv``.

Preset ``noah_qkv``: the form of ``ZhangYuanhan-AI/NOAH`` — one A (r×D) and one B (3D×r) on the
fused qkv output, updating q, **k** and v, scale 1 (same count).

Deviations: none from the paper; defaults r=8, α=8 (α/r = 1, the effective scale of NOAH's code),
dropout 0.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from typing_extensions import override

from pebench.method import Caps, Method, at_least_one, dropout_rate
from pebench.vit import Dims, PetlModule, add_linear_delta, blocks, merge_linear, qkv_rows


class LoRADelta(PetlModule):
    """Additive low-rank delta on the fused qkv output.

    ``targets`` lists which of q/k/v get their own (A, B) pair; ``"qkv"`` means one pair over the
    whole fused output.
    """

    def __init__(self, dim: int, rank: int, scale: float, dropout: float, targets: tuple[str, ...]):
        super().__init__()
        self.dim, self.scale, self.targets = dim, scale, targets
        self.dropout = nn.Dropout(dropout)
        self.lora_a = nn.ParameterDict()
        self.lora_b = nn.ParameterDict()
        for t in targets:
            out = 3 * dim if t == "qkv" else dim
            a = torch.empty(rank, dim)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            self.lora_a[t] = nn.Parameter(a)
            self.lora_b[t] = nn.Parameter(torch.zeros(out, rank))

    def delta_weight(self) -> torch.Tensor:
        """The (3D × D) update this delta adds to the fused qkv weight."""
        d = self.dim
        w = self.lora_a[self.targets[0]].new_zeros(3 * d, d)
        for t in self.targets:
            w[qkv_rows(d, t)] += self.scale * (self.lora_b[t] @ self.lora_a[t])
        return w

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        parts = {
            t: F.linear(F.linear(x, self.lora_a[t]), self.lora_b[t]) * self.scale
            for t in self.targets
        }
        if "qkv" in parts:
            return parts["qkv"]
        zeros = x.new_zeros(*x.shape[:-1], self.dim)
        return torch.cat([parts.get(t, zeros) for t in "qkv"], dim=-1)


class LoRA(Method):
    """LoRA on q and v of every block (paper form), or NOAH's fused-qkv form."""

    name = "lora"
    title = "LoRA: Low-Rank Adaptation of Large Language Models"
    paper_url = "https://arxiv.org/abs/2106.09685"
    code_url = "https://github.com/microsoft/LoRA"
    caps = Caps(identity_at_init=True, mergeable=True)
    presets = {"noah_qkv": {"form": "noah_qkv", "alpha": 8.0}}

    @dataclass(frozen=True)
    class Config(Method.Config):
        """LoRA options.

        Attributes:
            r: rank.
            alpha: scaling numerator; the update is multiplied by ``alpha / r``.
            dropout: dropout on the LoRA input.
            form: ``"qv"`` (paper) or ``"noah_qkv"`` (one pair on the fused qkv, scale 1).
        """

        r: int = at_least_one(8)
        alpha: float = 8.0
        dropout: float = dropout_rate(0.1)
        form: Literal["qv", "noah_qkv"] = "qv"

    def _scale(self) -> float:
        return 1.0 if self.config.form == "noah_qkv" else self.config.alpha / self.config.r

    @override
    def attach(self, model: nn.Module) -> nn.Module:
        c = self.config
        targets = ("qkv",) if c.form == "noah_qkv" else ("q", "v")
        for _, blk in blocks(model):
            dim = blk.attn.qkv.in_features
            add_linear_delta(blk.attn.qkv, LoRADelta(dim, c.r, self._scale(), c.dropout, targets))
        return model

    @override
    def expected_num_params(self, dims: Dims) -> int:
        return dims.depth * 4 * dims.embed_dim * self.config.r

    @torch.no_grad()
    @override
    def merge(self, model: nn.Module) -> nn.Module:
        for _, blk in blocks(model):
            merge_linear(blk.attn.qkv, blk.attn.qkv.delta.delta_weight())
        return model
