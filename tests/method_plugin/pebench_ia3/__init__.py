"""(IA)³ as a pebench method plugin: the template of ``docs/plugins.md``.

*Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning*
(Liu et al., NeurIPS 2022) — https://arxiv.org/abs/2205.05638

Learned vectors rescale the keys and values of every block and the MLP's hidden units after
the activation (all initialised to 1, so the model is the backbone at init)::

    norm1(x) ─ qkv ─ [q | l_k ⊙ k | l_v ⊙ v] ─ attention            (wrap_output on attn.qkv)
    norm2(x) ─ fc1 ─ act ─ l_ff ⊙ ─ fc2                              (mlp.act replaced)

Count: depth · (2·D + hidden). Mergeable: ``l_k``, ``l_v`` scale the k and v rows of ``qkv``
(weight and bias); ``l_ff`` scales the columns of ``fc2``.

This folder is an installed distribution (the package and its ``.dist-info`` as pip leaves them
in ``site-packages``); ``pyproject.toml`` next to it shows how the same plugin is packaged from
source.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from typing_extensions import override

from pebench.method import Caps, Method
from pebench.vit import Dims, PetlModule, blocks, unwrap_output, wrap_output

__version__ = "0.1"


class KVScale(PetlModule):
    """Multiplies the k and v thirds of the fused qkv output by learned vectors (init 1)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.l_k = nn.Parameter(torch.ones(dim))
        self.l_v = nn.Parameter(torch.ones(dim))

    def factor(self) -> torch.Tensor:
        """The (3D,) factor of the fused output: 1 on q, ``l_k`` on k, ``l_v`` on v."""
        return torch.cat([self.l_k.new_ones(self.dim), self.l_k, self.l_v])

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor()


class ScaledAct(PetlModule):
    """The MLP's activation followed by a learned per-unit scale ``l_ff`` (init 1)."""

    def __init__(self, act: nn.Module, hidden: int) -> None:
        super().__init__()
        self.act = act  # the backbone's activation: no parameters, no state-dict keys
        self.l_ff = nn.Parameter(torch.ones(hidden))

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x) * self.l_ff


class IA3(Method):
    """(IA)³: learned rescaling of keys, values and MLP hidden units."""

    name = "ia3"
    title = (
        "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning"
    )
    paper_url = "https://arxiv.org/abs/2205.05638"
    caps = Caps(identity_at_init=True, mergeable=True)
    presets = {"attn_only": {"mlp": False}}

    @dataclass(frozen=True)
    class Config(Method.Config):
        """(IA)³ options.

        Attributes:
            mlp: also rescale the MLP's hidden units (``l_ff``).
        """

        mlp: bool = True

    @override
    def attach(self, model: nn.Module) -> nn.Module:
        for _, blk in blocks(model):
            wrap_output(blk.attn.qkv, KVScale(blk.attn.qkv.in_features), "ia3")
            if self.config.mlp:
                blk.mlp.act = ScaledAct(blk.mlp.act, blk.mlp.fc1.out_features)
        return model

    @override
    def expected_num_params(self, dims: Dims) -> int:
        return dims.depth * (2 * dims.embed_dim + (dims.mlp_hidden if self.config.mlp else 0))

    @torch.no_grad()
    @override
    def merge(self, model: nn.Module) -> nn.Module:
        for _, blk in blocks(model):
            qkv = blk.attn.qkv
            factor = unwrap_output(qkv).factor()
            qkv.weight.mul_(factor[:, None])
            qkv.bias.mul_(factor)
            if isinstance(blk.mlp.act, ScaledAct):
                scaled = blk.mlp.act
                blk.mlp.fc2.weight.mul_(scaled.l_ff[None, :])
                blk.mlp.act = scaled.act
        return model


__all__ = ["IA3", "KVScale", "ScaledAct"]
