"""ARC and ARC_att: linear adapters with a shared, tied projection (Adapter Re-Composing).

*Efficient Adaptation of Large Vision Transformer via Adapter Re-Composing* (Dong, Yan, Lin, Wang,
NeurIPS 2023) — https://arxiv.org/abs/2310.06234 — code: https://github.com/DavidYanAnDe/ARC

Where it sits in a timm ``Block`` (in series on the LayerNorm outputs; slots ``attn_in``,
``mlp_in``)::

    x ─┬─ norm1 ─ ARC_att ─ attn ─(+)─┬─ norm2 ─ ARC_mlp ─ mlp ─(+)─▶
       └──────── residual ─────────────┘└──────── residual ──────┘

    ARC_side,l(x̃) = x̃ + U_side · Dropout(diag(c_side,l) · U_sideᵀ x̃) + b_side,l

U_att, U_mlp ∈ R^{D×D′} are tied (up = downᵀ) and shared by all blocks: one owner module,
``model.arc_shared``, holds them; every block's adapter keeps a plain reference (state-dict keys
``arc_shared.u_att``/``u_mlp`` appear once). Per block and side: scale c_l ∈ R^{D′}, bias b_l ∈ R^D.
Init (official code): U xavier-uniform, c_att = 0, b = 0, **c_mlp xavier-uniform on shape (1, D′)**
(commit a8407d7), so ``arc`` is not the identity at init while ``arc_att`` is.

Count: ARC 2·D·D′ + 2·depth·(D′ + D) (ViT-B/16, D′=50: 96,432); ARC_att D·D′ + depth·(D′ + D)
(48,216). Mergeable (eval mode, dropout off): M_l = I + U diag(c_l) Uᵀ, then
``W ← W M_l``, ``b ← b + W b_l`` on ``attn.qkv`` (att side) and ``mlp.fc1`` (mlp side).

Deliberate deviations from the official code:
  1. All ARC tensors train. The official VTAB script (``vtab_ARC_train.py``) freezes by name
     substring (``head``/``adapter``/``down_projection``), so every ARC tensor stays frozen there
     and the run is a zero-init linear probe; the FGVC script does train ARC.
  2. The head is pebench's shared Linear head, not the official zero-initialized head.
  3. c_l is stored as a vector (D′,) instead of (1, D′); the xavier draw uses the (1, D′) fan
     (bound √(6/(1+D′))), so the distribution is the official one.
  4. ``mlp_scale_init="zeros"`` (preset ``mlp_zeros``) is a labelled deviation that makes ``arc``
     the identity at init; the default keeps the official xavier init.
  5. ``arc_att`` has no ``mlp_scale_init`` field (it has no MLP side).
  6. Weight decay: the core decays only tensors with >= 2 dims (:func:`pebench.train.param_groups`:
     biases, norms, scales and other vectors are not decayed) for every method alike, so the scale
     vectors c_l are not decayed; the official AdamW decays every tensor, c_l included. pebench
     keeps one rule for all methods (a per-method decay set would be a per-method optimizer); at
     the budgets' weight decay of 1e-4 the difference is a factor (1 - lr·1e-4) per step on c_l.
Official-code bugs not copied: the VTAB freeze filter above, the broken ``--dataset`` choices,
test-set checkpoint selection, the head-bias-into-weight copy when ``zero_head=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from typing_extensions import override

from pebench.method import Caps, Method, at_least_one, dropout_rate
from pebench.vit import (
    Dims,
    PetlModule,
    blocks,
    check_vit,
    clear_slot,
    fold_affine_into_linear,
    set_slot,
    share,
)

OWNER = "arc_shared"
_SLOT = {"att": "attn_in", "mlp": "mlp_in"}


class ARCShared(PetlModule):
    """Owner of the projections shared by every block: ``u_<side>`` ∈ R^{D×D′} per side."""

    def __init__(self, dim: int, bottleneck: int, sides: tuple[str, ...]):
        super().__init__()
        self.sides = sides
        for side in sides:
            u = torch.empty(dim, bottleneck)
            nn.init.xavier_uniform_(u)
            self.register_parameter(f"u_{side}", nn.Parameter(u))

    def proj(self, side: str) -> torch.Tensor:
        """Return the shared projection U of ``side`` (D × D′)."""
        return getattr(self, f"u_{side}")


class ARCAdapter(PetlModule):
    """One block's ARC adapter on one side: ``x̃ + U·Dropout(c ⊙ Uᵀx̃) + b``.

    Args:
        shared: the :class:`ARCShared` owner (referenced, not registered as a child).
        side: ``"att"`` or ``"mlp"``.
        dim: embedding width D.
        bottleneck: D′.
        dropout: dropout probability on the bottleneck.
        scale_init: ``"zeros"`` or ``"xavier"`` (xavier-uniform with the fan of shape (1, D′)).

    """

    def __init__(
        self,
        shared: ARCShared,
        side: str,
        dim: int,
        bottleneck: int,
        dropout: float,
        scale_init: str,
    ):
        super().__init__()
        share(self, "shared", shared)
        self.side = side
        scale = torch.zeros(1, bottleneck)
        if scale_init == "xavier":
            nn.init.xavier_uniform_(scale)
        self.scale = nn.Parameter(scale.reshape(bottleneck))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.dropout = nn.Dropout(dropout)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(M, c)`` of the equivalent affine map ``x̃ ↦ M x̃ + c`` (dropout off), in float64."""
        u = self.shared.proj(self.side).double()
        m = torch.eye(u.shape[0], dtype=u.dtype, device=u.device) + (u * self.scale.double()) @ u.T
        return m, self.bias.double()

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.shared.proj(self.side)
        z = self.dropout(torch.matmul(x, u) * self.scale)  # diag(c) Uᵀ x̃, per token
        return x + F.linear(z, u) + self.bias  # U z + b


class _ARCBase(Method):
    """Shared code of :class:`ARC` and :class:`ARCAtt` (``sides`` selects the insertion points)."""

    paper_url = "https://arxiv.org/abs/2310.06234"
    code_url = "https://github.com/DavidYanAnDe/ARC"
    title = "Efficient Adaptation of Large Vision Transformer via Adapter Re-Composing"
    sides: tuple[str, ...] = ()

    def _scale_init(self, side: str) -> str:
        if side == "att":
            return "zeros"
        return getattr(self.config, "mlp_scale_init", "xavier")

    @override
    def attach(self, model: nn.Module) -> nn.Module:
        vit = check_vit(model)
        if OWNER in vit._modules:
            raise ValueError(f"model already has `{OWNER}`: ARC is attached once per model")
        c = self.config
        dim = vit.embed_dim
        owner = ARCShared(dim, c.bottleneck, self.sides)
        vit.add_module(OWNER, owner)
        for _, blk in blocks(vit):
            for side in self.sides:
                init = self._scale_init(side)
                adapter = ARCAdapter(owner, side, dim, c.bottleneck, c.dropout, init)
                set_slot(blk, _SLOT[side], adapter)
        return model

    @override
    def expected_num_params(self, dims: Dims) -> int:
        d, dp = dims.embed_dim, self.config.bottleneck
        return len(self.sides) * (d * dp + dims.depth * (dp + d))

    @torch.no_grad()
    @override
    def merge(self, model: nn.Module) -> nn.Module:
        vit = check_vit(model)
        targets = {"att": lambda b: b.attn.qkv, "mlp": lambda b: b.mlp.fc1}
        for _, blk in blocks(vit):
            for side in self.sides:
                m, c = blk._modules[_SLOT[side]].affine()
                fold_affine_into_linear(targets[side](blk), m, c)
                clear_slot(blk, _SLOT[side])
        del vit._modules[OWNER]
        return model


class ARC(_ARCBase):
    """ARC: adapters before attention and before the MLP (official xavier MLP-side scale init)."""

    name = "arc"
    caps = Caps(identity_at_init=False, mergeable=True)
    presets = {"mlp_zeros": {"mlp_scale_init": "zeros"}}
    sides = ("att", "mlp")

    @dataclass(frozen=True)
    class Config(Method.Config):
        """ARC options.

        Attributes:
            bottleneck: D′, width of the shared projections.
            dropout: dropout on the bottleneck ``diag(c) Uᵀ x̃``.
            mlp_scale_init: ``"xavier"`` (official) or ``"zeros"`` (deviation: identity at init).

        """

        bottleneck: int = at_least_one(50)
        dropout: float = dropout_rate(0.1)
        mlp_scale_init: Literal["xavier", "zeros"] = "xavier"


class ARCAtt(_ARCBase):
    """ARC_att: adapters before attention only (identity at init)."""

    name = "arc_att"
    caps = Caps(identity_at_init=True, mergeable=True)
    sides = ("att",)

    @dataclass(frozen=True)
    class Config(Method.Config):
        """ARC_att options.

        Attributes:
            bottleneck: D′, width of the shared projection.
            dropout: dropout on the bottleneck ``diag(c) Uᵀ x̃``.

        """

        bottleneck: int = at_least_one(50)
        dropout: float = dropout_rate(0.1)


__all__ = ["ARC", "ARCAdapter", "ARCAtt", "ARCShared"]
