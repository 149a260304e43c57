"""FacT: factor-tuning with tensorised weight increments shared across the whole ViT.

*FacT: Factor-Tuning for Lightweight Adaptation on Vision Transformer* (Jie & Deng, AAAI 2023)
https://arxiv.org/abs/2212.03145 — code: https://github.com/JieShibo/PETL-ViT (``FacT/``)

Every weight increment is ``s·V C U`` with model-wide factors U: D→r (no bias, default Linear
init) and V: r→D (no bias, zero init), owned once by ``model.fact_shared``, and an r×r core C per
D×D weight slot. A block has 12 slots: q, k, v, o, the 4 row-chunks of fc1 (4D×D) and the 4
column-chunks of fc2 (D×4D). Every Linear of a timm ``Block`` gains an additive delta::

    norm1(x) ─▶ qkv ──▶ attention ─▶ proj ──▶      norm2(x) ─▶ fc1 ─▶ GELU ─▶ fc2 ─▶
          └ s·[V Drop(C_q U x) | V Drop(C_k U x) | V Drop(C_v U x)] ─▶ + (qkv output)
          z (attention output) └ s·V Drop(C_o U z) ─▶ + (proj output)
          fc1: c = Drop(C_fc1 U x) ∈ R^{4r}, chunk j (r) ─▶ V ─▶ rows jD..(j+1)D of the output
          fc2: hidden chunk j (D) ─▶ U, concatenated (4r) ─▶ s·V Drop(C_fc2 ·)

FacT-TT owns per-block cores C_q, C_k, C_v, C_o (r×r), C_fc1 (4r×r), C_fc2 (r×4r), default Linear
init. FacT-TK owns a global core C ∈ R^{r×r×r} and factors P ∈ R^{r×12·depth} (both
xavier-uniform); slot n's core is ``C_n = Σ_c C[:, :, c]·P[c, n]``. Slot layout of block b
(n = 12·b + k): k = 0 q, 1 k, 2 v, 3 o, 4..7 fc1 chunks 0..3 (C_fc1 = [C_4; C_5; C_6; C_7]
stacked by rows), 8..11 fc2 chunks 0..3 (C_fc2 = [C_8 | C_9 | C_10 | C_11] by columns).

Counts (head excluded): TT ``2·D·r + 12·depth·r²`` (ViT-B/16, r=8: 21,504); TK
``2·D·r + 12·depth·r + r³`` (r=32: 86,528). V = 0, so identity at init. Mergeable: every delta is
linear, ``W_q ← W_q + s·V C_q U``, fc1 row-chunk j ← ``+ s·V C_fc1[j] U``, fc2 column-chunk
j ← ``+ s·V C_fc2[:, j] U``; the shared owner is removed. Requires ``mlp_hidden = 4·D``.

Defaults: dropout 0.1 on core outputs. The official VTAB configs (``FacT/configs/{tt,tk}``) set
(rank, s) per task: TT rank 8 ×9, 16 ×9, 4 ×1; s 0.01 ×1, 0.1 ×1, 1 ×7, 10 ×6, 100 ×4. TK rank
32 ×13, 16 ×6; s 0.01, 0.1, 1 ×4, 10 ×9, 100 ×4. pebench defaults: TT r=8 (tied with 16; the
rank of the published 21,504 count), s=1 (most frequent); TK r=32, s=10 (most frequent, also the
median). Set them with ``--set r=... scale=...``.

Deliberate deviations:
    * TK fc1/fc2 cores are stacked slot by slot (chunk j uses slot j's core, as the paper's
      slot structure says); the official code reshapes the (r, r, 4) slice stack to (r, 4r),
      which interleaves the four slot cores across chunks. Same count, same initial function.
    * Cores act as ``C u`` (column form); the official code computes ``u C`` (the transpose),
      immaterial for learned cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from typing_extensions import override

from pebench.method import Caps, Method, at_least_one, dropout_rate
from pebench.vit import Dims, PetlModule, add_linear_delta, blocks, check_vit, merge_linear, share

SLOTS_PER_BLOCK = 12
#: target Linear -> (first slot within the block, number of slots)
LAYOUT = {"qkv": (0, 3), "proj": (3, 1), "fc1": (4, 4), "fc2": (8, 4)}
_TT_CORES = {
    "qkv": ("core_q", "core_k", "core_v"),
    "proj": ("core_o",),
    "fc1": ("core_fc1",),
    "fc2": ("core_fc2",),
}


class FacTShared(PetlModule):
    """The model-wide tensors: U, V and (TK only) the global core and slot factors.

    Args:
        dim: embedding width ``D``.
        rank: ``r``.
        tk_slots: number of TK slots (12·depth), 0 for TT.
    """

    def __init__(self, dim: int, rank: int, tk_slots: int = 0):
        super().__init__()
        self.u = nn.Linear(dim, rank, bias=False)
        self.v = nn.Linear(rank, dim, bias=False)
        nn.init.zeros_(self.v.weight)
        if tk_slots:
            self.core = nn.Parameter(nn.init.xavier_uniform_(torch.empty(rank, rank, rank)))
            self.factors = nn.Parameter(nn.init.xavier_uniform_(torch.empty(rank, tk_slots)))

    def slot_cores(self, start: int, n: int) -> torch.Tensor:
        """TK cores of slots ``start .. start+n-1``, shape ``(n, r, r)``."""
        return torch.einsum("abc,cn->nab", self.core, self.factors[:, start : start + n])


class FacTDelta(PetlModule):
    """The additive delta of one Linear (``qkv``, ``proj``, ``fc1`` or ``fc2``) of one block.

    Args:
        target: which Linear.
        shared: the :class:`FacTShared` owner (referenced, not registered).
        dim: ``D``.
        rank: ``r``.
        scale: ``s``.
        dropout: dropout on the core outputs.
        tk_base: first TK slot of this block (``12·b``); ``None`` for TT (own cores).
    """

    def __init__(
        self,
        target: str,
        shared: FacTShared,
        dim: int,
        rank: int,
        scale: float,
        dropout: float,
        tk_base: int | None = None,
    ):
        super().__init__()
        self.target, self.dim, self.rank, self.scale, self.tk_base = (
            target,
            dim,
            rank,
            scale,
            tk_base,
        )
        self.dropout = nn.Dropout(dropout)
        share(self, "shared", shared)
        if tk_base is None:
            shape = {"fc1": (4 * rank, rank), "fc2": (rank, 4 * rank)}.get(target, (rank, rank))
            for name in _TT_CORES[target]:
                w = nn.init.kaiming_uniform_(torch.empty(shape), a=math.sqrt(5))
                self.register_parameter(name, nn.Parameter(w))

    def cores(self) -> list[torch.Tensor]:
        """The core matrices in column form (q, k, v | o | C_fc1 (4r×r) | C_fc2 (r×4r))."""
        if self.tk_base is None:
            return [getattr(self, n) for n in _TT_CORES[self.target]]
        off, n = LAYOUT[self.target]
        c = list(self.shared.slot_cores(self.tk_base + off, n))
        if self.target == "fc1":
            return [torch.cat(c, dim=0)]
        if self.target == "fc2":
            return [torch.cat(c, dim=1)]
        return c

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sh = self.shared
        u = sh.u(x.unflatten(-1, (4, self.dim))).flatten(-2) if self.target == "fc2" else sh.u(x)
        outs = [self.dropout(F.linear(u, c)) for c in self.cores()]
        if self.target == "fc1":
            return self.scale * sh.v(outs[0].unflatten(-1, (4, self.rank))).flatten(-2)
        return self.scale * torch.cat([sh.v(o) for o in outs], dim=-1)

    def delta_weight(self) -> torch.Tensor:
        """The weight increment this delta adds (shape of the target Linear's weight)."""
        vw, uw, r = self.shared.v.weight, self.shared.u.weight, self.rank
        cores = self.cores()
        if self.target == "fc1":
            parts, dim = [vw @ cores[0][j * r : (j + 1) * r] @ uw for j in range(4)], 0
        elif self.target == "fc2":
            parts, dim = [vw @ cores[0][:, j * r : (j + 1) * r] @ uw for j in range(4)], 1
        else:
            parts, dim = [vw @ c @ uw for c in cores], 0
        return self.scale * torch.cat(parts, dim=dim)


def _targets(blk: nn.Module) -> dict[str, nn.Linear]:
    return {"qkv": blk.attn.qkv, "proj": blk.attn.proj, "fc1": blk.mlp.fc1, "fc2": blk.mlp.fc2}


class _FacT(Method):
    """Shared attach/merge of FacT-TT and FacT-TK (``tk`` selects the core format)."""

    paper_url = "https://arxiv.org/abs/2212.03145"
    code_url = "https://github.com/JieShibo/PETL-ViT"
    caps = Caps(identity_at_init=True, mergeable=True)
    tk = False

    @override
    def attach(self, model: nn.Module) -> nn.Module:
        vit, c = check_vit(model), self.config
        dim, depth = vit.blocks[0].attn.qkv.in_features, len(vit.blocks)
        for i, blk in blocks(vit):
            hidden = blk.mlp.fc1.out_features
            if blk.attn.qkv.in_features != dim or hidden != 4 * dim:
                raise ValueError(
                    f"FacT needs mlp_hidden = 4·D in every block (fc1 split into 4 D×D slots); "
                    f"block {i} has D={blk.attn.qkv.in_features}, mlp_hidden={hidden}"
                )
        if "fact_shared" in vit._modules:
            raise ValueError("model already has FacT attached (model.fact_shared exists)")
        shared = FacTShared(dim, c.r, SLOTS_PER_BLOCK * depth if self.tk else 0)
        vit.fact_shared = shared
        for i, blk in blocks(vit):
            base = SLOTS_PER_BLOCK * i if self.tk else None
            for target, lin in _targets(blk).items():
                add_linear_delta(lin, FacTDelta(target, shared, dim, c.r, c.scale, c.dropout, base))
        return model

    @torch.no_grad()
    @override
    def merge(self, model: nn.Module) -> nn.Module:
        vit = check_vit(model)
        for _, blk in blocks(vit):
            for lin in _targets(blk).values():
                merge_linear(lin, lin.delta.delta_weight())
        del vit.fact_shared
        return model


class FacTTT(_FacT):
    """FacT-TT: shared U, V and per-block r×r cores (tensor-train format)."""

    name = "fact_tt"
    title = "FacT: Factor-Tuning for Lightweight Adaptation on Vision Transformer (FacT-TT)"

    @dataclass(frozen=True)
    class Config(Method.Config):
        """FacT-TT options.

        Attributes:
            r: rank.
            scale: global scale ``s`` of every delta.
            dropout: dropout on the core outputs.
        """

        r: int = at_least_one(8)
        scale: float = 1.0
        dropout: float = dropout_rate(0.1)

    @override
    def expected_num_params(self, dims: Dims) -> int:
        d, r = dims.embed_dim, self.config.r
        return 2 * d * r + SLOTS_PER_BLOCK * dims.depth * r * r


class FacTTK(_FacT):
    """FacT-TK: shared U, V, a global r×r×r core and per-slot factors (Tucker format)."""

    name = "fact_tk"
    title = "FacT: Factor-Tuning for Lightweight Adaptation on Vision Transformer (FacT-TK)"
    tk = True

    @dataclass(frozen=True)
    class Config(Method.Config):
        """FacT-TK options.

        Attributes:
            r: rank.
            scale: global scale ``s`` of every delta.
            dropout: dropout on the core outputs.
        """

        r: int = at_least_one(32)
        scale: float = 10.0
        dropout: float = dropout_rate(0.1)

    @override
    def expected_num_params(self, dims: Dims) -> int:
        d, r = dims.embed_dim, self.config.r
        return 2 * d * r + SLOTS_PER_BLOCK * dims.depth * r + r**3
