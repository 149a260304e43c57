"""Deliberately broken methods: each fails exactly one conformance check (its docstring's bug).

``tests/test_conformance.py`` proves every check catches its method here; other tests combine
them (a plugin whose count and merge are wrong).
"""

import math

import torch
from torch import nn

from pebench.methods.lora import LoRA
from pebench.vit import PetlModule, blocks, merge_linear, set_slot


class NotIdentityLoRA(LoRA):
    """Claims identity at init but initialises B randomly."""

    def attach(self, model):
        super().attach(model)
        for _, blk in blocks(model):
            for p in blk.attn.qkv.delta.lora_b.values():
                nn.init.normal_(p, std=0.1)
        return model


class WrongMergeLoRA(LoRA):
    """Merges with the wrong sign."""

    def merge(self, model):
        for _, blk in blocks(model):
            merge_linear(blk.attn.qkv, -blk.attn.qkv.delta.delta_weight())
        return model


class MiscountedLoRA(LoRA):
    def expected_num_params(self, dims):
        return super().expected_num_params(dims) + 1


class _DeadParam(PetlModule):
    def __init__(self, dim):
        super().__init__()
        self.used = nn.Parameter(torch.zeros(dim))
        self.unused = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return x + self.used


class DeadParamMethod(LoRA):
    def attach(self, model):
        for _, blk in blocks(model):
            set_slot(blk, "post", _DeadParam(model.embed_dim))
        return model

    def expected_num_params(self, dims):
        return 2 * dims.depth * dims.embed_dim


class _AlwaysDropout(PetlModule):
    def __init__(self, dim):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * nn.functional.dropout(self.scale, 0.5, training=True)


class DropoutIgnoresEval(LoRA):
    def attach(self, model):
        for _, blk in blocks(model):
            set_slot(blk, "post", _AlwaysDropout(model.embed_dim))
        return model

    def expected_num_params(self, dims):
        return dims.depth * dims.embed_dim


class _BatchMixing(PetlModule):
    def __init__(self, dim):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return x + self.w * x.mean(dim=0, keepdim=True)


class BatchMixingMethod(LoRA):
    def attach(self, model):
        for _, blk in blocks(model):
            set_slot(blk, "post", _BatchMixing(model.embed_dim))
        return model

    def expected_num_params(self, dims):
        return dims.depth * dims.embed_dim


class _FixedLength(PetlModule):
    def __init__(self, dim, length):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(length, dim))

    def forward(self, x):
        return x + self.p


class FixedLengthMethod(LoRA):
    def attach(self, model):
        for _, blk in blocks(model):
            set_slot(blk, "post", _FixedLength(model.embed_dim, 17))
        return model

    def expected_num_params(self, dims):
        return dims.depth * dims.embed_dim * 17


class IgnoresNonViT(LoRA):
    def attach(self, model):
        return model


class _SquareGrid(PetlModule):
    """Assumes the patch tokens form one square image grid (wrong for video token layouts)."""

    def __init__(self, dim, num_prefix):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim))
        self.num_prefix = num_prefix

    def forward(self, x):
        n = x.shape[1] - self.num_prefix
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"{n} patch tokens are not a square grid")
        return x + self.w


class ImageOnlyMethod(LoRA):
    def attach(self, model):
        for _, blk in blocks(model):
            set_slot(blk, "post", _SquareGrid(model.embed_dim, model.num_prefix_tokens))
        return model

    def expected_num_params(self, dims):
        return dims.depth * dims.embed_dim


__all__ = [
    "BatchMixingMethod",
    "DeadParamMethod",
    "DropoutIgnoresEval",
    "FixedLengthMethod",
    "IgnoresNonViT",
    "ImageOnlyMethod",
    "MiscountedLoRA",
    "NotIdentityLoRA",
    "WrongMergeLoRA",
]
