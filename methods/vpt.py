"""VPT: learnable prompt tokens in the input sequence of a frozen ViT (shallow and deep).

*Visual Prompt Tuning* (Jia, Tang, Chen, Cardie, Belongie, Hariharan, Lim, ECCV 2022)
https://arxiv.org/abs/2203.12119 — code: https://github.com/KMnP/vpt

With k prefix tokens (cls and/or register tokens; k = 0 for avg-pool backbones) and m prompts::

    embed ─ +pos ─ norm_pre ─▶ [prefix(k) | patches]
    blocks[0].pre   inserts P_0:  [prefix | P_0 | patches] ─ block 0 ─▶ [prefix' | P_0' | patches']
    blocks[i].pre   (deep only, i ≥ 1) replaces the prompt outputs: [prefix' | P_i | patches']
    ... ─ norm ─ pool (cls token, or mean over the patch tokens) ─ head

``model.num_prefix_tokens`` grows by m, so timm's pooling skips the prompts (token pooling still
reads index 0, the cls token) and they never reach the head.
Init uniform(−v, v), v = √(6/(c·p·p + D)) (c input channels, p patch size: 0.0625 on ViT-B/16),
for every prompt set. On video backbones (tubelets of t frames) the patch embedding's fan-in is
c·t·p·p, so v = √(6/(c·t·p·p + D)) (VideoMAE ViT-B, t=2: 0.0510); prompts are inserted after the
(absent) prefix tokens, i.e. before the N = T/t·h·w space-time tokens, and the mean pooling skips
them as on image backbones. Prompt dropout (default 0.0) is applied to the prompts as they enter.
Count: m·D (shallow), depth·m·D (deep); ViT-B/16, m=10: 7,680 / 92,160. Not mergeable (the
sequence grows), not identity at init.

Presets ``m1`` ``m5`` ``m50`` ``m100`` ``m200`` (default m = 10): the grid {1, 5, 10, 50, 100, 200}
from which the paper picks m per task on VTAB-1k/FGVC (pebench methods.md §3.5, not re-verified
against the paper); ``OSU-MLB/PETL_Vision`` searches deep m in {5, 10, 50, 100}.

Deviations: (1) the input prompts live in the ``pre`` slot of block 0 (after ``norm_pre``), not
in ``norm_pre`` itself, so pre-norm (CLIP) backbones keep their ``norm_pre`` keys; for timm ViTs
whose ``norm_pre`` is an Identity this is the same place. (2) The official code puts the frozen
encoder in ``eval()`` during training; pebench leaves train/eval mode to the core (backbone
dropout rates are 0 in the budgets). (3) Register tokens are treated like the cls token (prompts
follow them). Not copied: NOAH's appended prompts with their own position embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from typing_extensions import override

from pebench.method import Caps, Method, at_least_one, dropout_rate
from pebench.vit import Dims, PetlModule, blocks, check_vit, set_slot, vit_dims


class Prompts(PetlModule):
    """m prompt tokens placed right after the first ``num_prefix`` tokens of the sequence.

    ``replace=False`` inserts them (``[prefix | P | rest]``, block 0); ``replace=True``
    overwrites the m tokens that follow the prefix (deep VPT, blocks 1..L-1).

    Args:
        num_tokens: m.
        dim: token width D.
        num_prefix: tokens kept in front of the prompts (cls + register tokens).
        bound: init range, uniform(−bound, bound).
        dropout: dropout on the prompts (per sample).
        replace: overwrite the previous prompts instead of inserting.
        like: a backbone tensor whose device and dtype the prompts take.
    """

    def __init__(
        self,
        num_tokens: int,
        dim: int,
        num_prefix: int,
        bound: float,
        dropout: float,
        replace: bool,
        like: torch.Tensor,
    ):
        super().__init__()
        self.num_prefix, self.replace = num_prefix, replace
        empty = torch.empty(1, num_tokens, dim, device=like.device, dtype=like.dtype)
        self.prompts = nn.Parameter(empty.uniform_(-bound, bound))
        self.dropout = nn.Dropout(dropout)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, m = self.num_prefix, self.prompts.shape[1]
        if x.shape[1] < k + (m if self.replace else 0):
            raise ValueError(
                f"VPT: sequence of {x.shape[1]} tokens is too short for {k} prefix tokens "
                f"and {m} prompts"
            )
        p = self.dropout(self.prompts.expand(x.shape[0], -1, -1))
        rest = x[:, k + m :] if self.replace else x[:, k:]
        return torch.cat([x[:, :k], p, rest], dim=1)


class VPTShallow(Method):
    """m prompt tokens at the encoder input only (after the cls and register tokens)."""

    name = "vpt_shallow"
    title = "Visual Prompt Tuning"
    paper_url = "https://arxiv.org/abs/2203.12119"
    code_url = "https://github.com/KMnP/vpt"
    caps = Caps(identity_at_init=False, mergeable=False)
    presets = {f"m{m}": {"num_tokens": m} for m in (1, 5, 50, 100, 200)}
    deep = False

    @dataclass(frozen=True)
    class Config(Method.Config):
        """VPT options.

        Attributes:
            num_tokens: prompt length m (per layer for deep VPT).
            dropout: dropout on the prompt tokens.
        """

        num_tokens: int = at_least_one(10)
        dropout: float = dropout_rate(0.0)

    @override
    def attach(self, model: nn.Module) -> nn.Module:
        vit = check_vit(model)
        if getattr(vit, "dynamic_img_size", False):
            raise ValueError(
                "VPT: backbones with dynamic_img_size=True resample pos_embed using "
                "num_prefix_tokens, which VPT changes; create the backbone without it"
            )
        if getattr(vit, "pool_include_prefix", False):
            raise ValueError("VPT: pool_include_prefix=True would pool over the prompt tokens")
        dims, c = vit_dims(vit), self.config
        bound = math.sqrt(6.0 / (dims.patch_volume + dims.embed_dim))
        k, like = vit.num_prefix_tokens, vit.patch_embed.proj.weight
        for i, blk in blocks(vit):
            if i > 0 and not self.deep:
                break
            prompts = Prompts(c.num_tokens, dims.embed_dim, k, bound, c.dropout, i > 0, like)
            set_slot(blk, "pre", prompts)
        vit.num_prefix_tokens = k + c.num_tokens  # pooling skips the prompts
        return vit

    @override
    def expected_num_params(self, dims: Dims) -> int:
        layers = dims.depth if self.deep else 1
        return layers * self.config.num_tokens * dims.embed_dim


class VPTDeep(VPTShallow):
    """m prompt tokens per block: block i ≥ 1 replaces the previous prompt outputs by its own."""

    name = "vpt_deep"
    deep = True
