"""Convpass: a convolutional bypass next to attention and MLP.

*Convolutional Bypasses Are Better Vision Transformer Adapters* (Jie & Deng, arXiv 2022)
https://arxiv.org/abs/2207.07039 — code: https://github.com/JieShibo/PETL-ViT (``convpass/``)

``Convpass(z) = W_up Drop(QuickGELU(Conv3×3(QuickGELU(W_down z + b_down))))``: the 3×3 conv (r→r
channels, padding 1, bias) runs on the patch grid; every prefix token (cls, registers) goes
through the same conv as its own 1×1 map, so only the conv's centre tap and bias reach it.
Where it sits in a timm ``Block`` (``attn_branch`` / ``mlp_branch`` slots, parallel branches)::

    x ─┬─ norm1 ─┬─ attn ─────────── drop_path1 ───────(+)─ x_a
       │         └─ Convpass_att ─── drop_path1 ─ ·s ──(+)
       └──────────────── residual ─────────────────────(+)
    x_a ┬─ norm2 ─┬─ mlp ──────────── drop_path2 ───────(+)─▶
        │         └─ Convpass_mlp ─── drop_path2 ─ ·s ──(+)
        └──────────────── residual ─────────────────────(+)

Count per bypass: ``D·r + r`` (down) + ``9·r² + r`` (conv) + ``r·D + D`` (up) =
``2·D·r + 9·r² + 2·r + D``; ``2·depth·(...)`` for the block variant (ViT-B/16, r=8: 327,552),
``depth·(...)`` for ``placement="attn"`` (preset ``attn``, 163,776). Not mergeable.

Init: W_down xavier-uniform, b_down 0; W_up and b_up 0 (identity at init, whatever the conv);
conv bias 0 and weight either zeros plus the identity at the centre tap (``conv_init="identity"``,
the default) or xavier-uniform (``"xavier"``). The official VTAB configs choose per task: block
variant xavier on 10 tasks, identity on 9; attention-only variant xavier on all 19, so the
``attn`` preset uses xavier.

Default scale: the official VTAB configs set s per task from {0.01, 0.1, 1, 10, 100}
(``convpass/vtab/configs/convpass/*.yaml``; block variant: 0.01 ×1, 0.1 ×5, 1 ×5, 10 ×5,
100 ×3). pebench uses the median, s = 1; set it with ``--set scale=...``.

Deliberate deviations:
    * The conv runs on the backbone's own patch grid (``patch_embed.grid_size``), not a
      hard-coded 14×14; a token count that is a multiple ``t·h·w`` of the grid (e.g. video
      tubelets) is treated as ``t`` frames, each convolved separately. Any other token count
      raises a ValueError. Backbones without prefix tokens have no 1×1 maps.
    * The identity conv init uses ``eye(r)``; the official code hard-codes ``eye(8)`` (breaks
      for r ≠ 8).
    * Not a deviation from the code: the bypass goes through the block's drop-path (a fresh
      mask, as in the official code); the paper's equation has no drop-path on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from typing_extensions import override

from pebench.layers import QuickGELU
from pebench.method import Caps, Method, at_least_one, dropout_rate
from pebench.vit import Dims, PetlModule, blocks, check_vit, set_slot, share


class ConvBypass(PetlModule):
    """One Convpass branch: down, QuickGELU, 3×3 conv on the patch grid, QuickGELU, up.

    Args:
        dim: feature width ``D``.
        rank: bottleneck width ``r`` (conv channels).
        grid: ``(h, w)`` patch grid of the backbone.
        num_prefix: number of prefix tokens (cls, registers) before the patch tokens.
        scale: output scale ``s``.
        dropout: dropout before the up-projection.
        conv_init: ``"identity"`` or ``"xavier"``.
        drop_path: the block's drop-path module (shared, not registered as a child).
    """

    def __init__(
        self,
        dim: int,
        rank: int,
        grid: tuple[int, int],
        num_prefix: int,
        scale: float,
        dropout: float,
        conv_init: str,
        drop_path: nn.Module,
    ):
        super().__init__()
        self.rank, self.grid, self.num_prefix, self.scale = rank, tuple(grid), num_prefix, scale
        self.down = nn.Linear(dim, rank)
        self.conv = nn.Conv2d(rank, rank, 3, padding=1)
        self.up = nn.Linear(rank, dim)
        self.act = QuickGELU()
        self.dropout = nn.Dropout(dropout)
        with torch.no_grad():
            nn.init.xavier_uniform_(self.down.weight)
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.conv.bias)
            if conv_init == "identity":
                nn.init.zeros_(self.conv.weight)
                self.conv.weight[:, :, 1, 1] = torch.eye(rank)
            else:
                nn.init.xavier_uniform_(self.conv.weight)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
        share(self, "drop_path", drop_path)

    def _conv_patches(self, z: torch.Tensor) -> torch.Tensor:
        b, n, r = z.shape
        h, w = self.grid
        if n % (h * w):
            raise ValueError(
                f"Convpass: {n} patch tokens do not fit the backbone's {h}x{w} patch grid "
                f"(need a multiple of {h * w}); dynamic image sizes are not supported"
            )
        t = n // (h * w)
        maps = z.reshape(b * t, h, w, r).permute(0, 3, 1, 2)
        return self.conv(maps).permute(0, 2, 3, 1).reshape(b, n, r)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.act(self.down(x))
        b, p = z.shape[0], self.num_prefix
        out = self._conv_patches(z[:, p:])
        if p:  # each prefix token as a 1×1 map through the same (padded) conv
            pre = self.conv(z[:, :p].reshape(b * p, self.rank, 1, 1)).reshape(b, p, self.rank)
            out = torch.cat([pre, out], dim=1)
        return self.scale * self.drop_path(self.up(self.dropout(self.act(out))))


class Convpass(Method):
    """Convolutional bypasses parallel to attention and MLP (or attention only)."""

    name = "convpass"
    title = "Convolutional Bypasses Are Better Vision Transformer Adapters"
    paper_url = "https://arxiv.org/abs/2207.07039"
    code_url = "https://github.com/JieShibo/PETL-ViT"
    caps = Caps(identity_at_init=True, mergeable=False)
    presets = {"attn": {"placement": "attn", "conv_init": "xavier"}}

    @dataclass(frozen=True)
    class Config(Method.Config):
        """Convpass options.

        Attributes:
            r: bottleneck width (conv channels).
            scale: output scale ``s`` of every bypass.
            dropout: dropout before the up-projection.
            conv_init: ``"identity"`` (zeros + identity centre tap) or ``"xavier"``.
            placement: ``"block"`` (attention and MLP) or ``"attn"`` (attention only).
        """

        r: int = at_least_one(8)
        scale: float = 1.0
        dropout: float = dropout_rate(0.1)
        conv_init: Literal["identity", "xavier"] = "identity"
        placement: Literal["block", "attn"] = "block"

    @override
    def attach(self, model: nn.Module) -> nn.Module:
        c, vit = self.config, check_vit(model)
        grid = tuple(vit.patch_embed.grid_size)
        sides = [("attn_branch", "drop_path1")]
        if c.placement == "block":
            sides.append(("mlp_branch", "drop_path2"))
        for _, blk in blocks(vit):
            dim = blk.attn.qkv.in_features
            for slot, dp in sides:
                mod = ConvBypass(
                    dim,
                    c.r,
                    grid,
                    vit.num_prefix_tokens,
                    c.scale,
                    c.dropout,
                    c.conv_init,
                    getattr(blk, dp),
                )
                set_slot(blk, slot, mod)
        return model

    @override
    def expected_num_params(self, dims: Dims) -> int:
        d, r = dims.embed_dim, self.config.r
        sides = 2 if self.config.placement == "block" else 1
        return sides * dims.depth * (2 * d * r + 9 * r * r + 2 * r + d)
