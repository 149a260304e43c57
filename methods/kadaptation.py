"""KAdaptation: Kronecker-product updates of the query and value projections (paper form).

*Parameter-efficient Model Adaptation for Vision Transformers* (He, Li, Zhang, Yang, Wang,
AAAI 2023) — https://arxiv.org/abs/2203.16329 — code: https://github.com/eric-ai-lab/PEViT

Where it sits in a timm ``Block`` (the fused ``attn.qkv`` Linear gains an additive delta, added
before timm scales q, i.e. a weight update)::

    norm1(x) ──▶ qkv ──▶ [q | k | v] ──▶ attention
              └─ s·ΔW_q x + β_q ──▶ + q
              └─ s·ΔW_v x + β_v ──▶ + v

    ΔW  = Σ_{i=1..n} A_i ⊗ B_i
    A_i = a_i b_iᵀ ∈ R^{n×n}            a_i, b_i ∈ R^n        shared by all blocks ("slow")
    B_i = u_i v_iᵀ ∈ R^{(D/n)×(D/n)}    u_i, v_i ∈ R^{(D/n)×r}  per block ("fast")

q and v have their own A, u, v and bias. The shared factors a, b (of q and of v) live once in the
model, in ``model.kadaptation_shared``; each block's delta keeps a plain reference.
Init: a, b ~ U(−0.01, 0.01); u glorot-uniform (the Compacter/PEViT ``glorot_uniform``: xavier with
gain √2, per slice i); v = 0 and β = 0, so ΔW = 0 at init but v receives gradients.
s = 160 (the official code's constant 128/4·5).
Because (a bᵀ)⊗(u vᵀ) = (a⊗u)(b⊗v)ᵀ, the forward uses ΔW = P Qᵀ with P, Q ∈ R^{D×nr} (exact, per
token, 2·D·n·r multiply-adds instead of D²); merge builds the Kronecker sum itself.

Count: depth·(4·D·r + 2·D) + 4·n² (ViT-B/16, n=32, r=1: 59,392). D must be divisible by n.
Mergeable: ``W_q ← W_q + s·ΔW_q``, ``b_q ← b_q + β_q`` (same for v).

Deliberate deviations from the official code (``vision_benchmark/evaluation/model.py``), which does
not compute the paper's method:
  1. v = 0 but u glorot-uniform. The code zero-initializes both per-layer factors, so the Kronecker
     path never receives a gradient and only a bias trains.
  2. v uses its own per-layer factors (the code builds H_v from the q factors) and q and v have
     separate biases (the code shares one).
  3. The delta is per token (the code reshapes an (N, B, C) tensor as (B·heads, N, C/heads), mixing
     tokens, heads and batch elements), and it is added before q is scaled (the code adds it after).
  4. No dropout on the Kronecker weight (the code drops H with p = 0.5).
Left out: ``official_code_compat`` (reproducing 1–4 needs a different attention forward and a
deliberately scrambled reshape; not worth a code path). Official-code form count for reference:
depth·(4·D·r + D) + 4·n² = 50,176.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from typing_extensions import override

from pebench.method import Caps, Method, at_least_one
from pebench.vit import (
    Dims,
    PetlModule,
    add_linear_delta,
    blocks,
    check_vit,
    merge_linear,
    qkv_rows,
    share,
)

OWNER = "kadaptation_shared"
TARGETS = ("q", "v")


class KAdaptationShared(PetlModule):
    """The shared rank-1 rules ``A_i = a_i b_iᵀ``: a_i, b_i are rows of ``a_<t>``, ``b_<t>``.

    One (n × n) pair per target t ∈ {q, v}, drawn from U(−0.01, 0.01).
    """

    def __init__(self, n: int):
        super().__init__()
        for t in TARGETS:
            for f in ("a", "b"):
                self.register_parameter(
                    f"{f}_{t}", nn.Parameter(torch.empty(n, n).uniform_(-0.01, 0.01))
                )

    def rule(self, t: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(a, b)`` of target ``t``: ``A_i = outer(a[i], b[i])``."""
        return getattr(self, f"a_{t}"), getattr(self, f"b_{t}")


class KAdaptationDelta(PetlModule):
    """One block's delta on the fused qkv output: ``[s·ΔW_q x + β_q | 0 | s·ΔW_v x + β_v]``.

    Args:
        shared: the :class:`KAdaptationShared` owner (referenced, not registered as a child).
        dim: embedding width D (divisible by ``n``).
        n: number of Kronecker summands (and size of A_i).
        rank: rank r of each B_i.
        scale: s.

    """

    def __init__(self, shared: KAdaptationShared, dim: int, n: int, rank: int, scale: float):
        super().__init__()
        share(self, "shared", shared)
        self.dim, self.n, self.scale = dim, n, scale
        m = dim // n
        bound = math.sqrt(2.0) * math.sqrt(6.0 / (m + rank))  # xavier(gain √2) on each (m, r) slice
        for t in TARGETS:
            self.register_parameter(
                f"u_{t}", nn.Parameter(torch.empty(n, m, rank).uniform_(-bound, bound))
            )
            self.register_parameter(f"v_{t}", nn.Parameter(torch.zeros(n, m, rank)))
            self.register_parameter(f"bias_{t}", nn.Parameter(torch.zeros(dim)))

    def _uvb(self, t: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return getattr(self, f"u_{t}"), getattr(self, f"v_{t}"), getattr(self, f"bias_{t}")

    def delta_weight(self, t: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Return ΔW_t = Σ_i A_i ⊗ (u_i v_iᵀ) (D × D, no scale s), optionally cast to ``dtype``."""
        a, b = self.shared.rule(t)
        u, v, _ = self._uvb(t)
        a, b, u, v = (x.to(dtype) if dtype is not None else x for x in (a, b, u, v))
        rules = a[:, :, None] * b[:, None, :]  # A_i: (n, n, n)
        fast = u @ v.transpose(1, 2)  # B_i: (n, m, m)
        return torch.einsum("ipq,ixy->pxqy", rules, fast).reshape(self.dim, self.dim)

    def _low_rank(self, t: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P, Q)`` with ΔW_t = P Qᵀ: columns a_i ⊗ u_i[:, k] and b_i ⊗ v_i[:, k]."""
        a, b = self.shared.rule(t)
        u, v, _ = self._uvb(t)
        p = torch.einsum("ip,ixk->pxik", a, u).reshape(self.dim, -1)
        q = torch.einsum("ip,ixk->pxik", b, v).reshape(self.dim, -1)
        return p, q

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = {}
        for t in TARGETS:
            p, q = self._low_rank(t)
            out[t] = self.scale * F.linear(F.linear(x, q.T), p) + self._uvb(t)[2]
        return torch.cat([out["q"], torch.zeros_like(out["q"]), out["v"]], dim=-1)


class KAdaptation(Method):
    """KAdaptation on W_q and W_v of every block, as the paper describes it."""

    name = "kadaptation"
    title = "Parameter-efficient Model Adaptation for Vision Transformers"
    paper_url = "https://arxiv.org/abs/2203.16329"
    code_url = "https://github.com/eric-ai-lab/PEViT"
    caps = Caps(identity_at_init=True, mergeable=True)

    @dataclass(frozen=True)
    class Config(Method.Config):
        """KAdaptation options.

        Attributes:
            n: number of Kronecker summands; A_i ∈ R^{n×n}, B_i ∈ R^{(D/n)×(D/n)}.
            r: rank of each per-layer B_i = u_i v_iᵀ.
            scale: s multiplying ΔW (the official code's 128/4·5 = 160).

        """

        n: int = at_least_one(32)
        r: int = at_least_one(1)
        scale: float = 160.0

    def _check_dim(self, dim: int) -> None:
        if dim % self.config.n:
            raise ValueError(
                f"KAdaptation needs embed_dim divisible by n: embed_dim={dim} is not a multiple "
                f"of n={self.config.n}"
            )

    @override
    def attach(self, model: nn.Module) -> nn.Module:
        vit = check_vit(model)
        c = self.config
        dim = vit.embed_dim
        self._check_dim(dim)
        if OWNER in vit._modules:
            raise ValueError(f"model already has `{OWNER}`: KAdaptation is attached once")
        owner = KAdaptationShared(c.n)
        vit.add_module(OWNER, owner)
        for _, blk in blocks(vit):
            add_linear_delta(blk.attn.qkv, KAdaptationDelta(owner, dim, c.n, c.r, c.scale))
        return model

    @override
    def expected_num_params(self, dims: Dims) -> int:
        self._check_dim(dims.embed_dim)
        d, n, r = dims.embed_dim, self.config.n, self.config.r
        return dims.depth * (4 * d * r + 2 * d) + 4 * n * n

    @torch.no_grad()
    @override
    def merge(self, model: nn.Module) -> nn.Module:
        vit = check_vit(model)
        for _, blk in blocks(vit):
            qkv = blk.attn.qkv
            delta: KAdaptationDelta = qkv.delta
            d = delta.dim
            d_weight = qkv.weight.new_zeros(3 * d, d, dtype=torch.float64)
            d_bias = qkv.weight.new_zeros(3 * d, dtype=torch.float64)
            for t in TARGETS:
                rows = qkv_rows(d, t)
                d_weight[rows] = delta.scale * delta.delta_weight(t, torch.float64)
                d_bias[rows] = delta._uvb(t)[2].double()
            merge_linear(qkv, d_weight, d_bias)
        del vit._modules[OWNER]
        return model


__all__ = ["KAdaptation", "KAdaptationDelta", "KAdaptationShared"]
