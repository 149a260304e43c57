"""The conformance suite, parametrized by the registry, and proof that each check can fail."""

import math

import pytest
import torch
from torch import nn

from pebench.conformance import CHECKS, KINDS, plain_backbone, run_checks
from pebench.methods import get_method_class, registry
from pebench.methods.lora import LoRA, LoRADelta
from pebench.vit import PetlModule, add_linear_delta, blocks, merge_linear, set_slot


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("name", registry.names())
def test_registered_method_conforms(name, check):
    CHECKS[check](get_method_class(name))


# ------------------------------------------------------------ broken methods must be caught --
class _NotIdentityLoRA(LoRA):
    """Claims identity at init but initialises B randomly."""

    def attach(self, model):
        super().attach(model)
        for _, blk in blocks(model):
            for p in blk.attn.qkv.delta.lora_b.values():
                nn.init.normal_(p, std=0.1)
        return model


class _WrongMergeLoRA(LoRA):
    """Merges with the wrong sign."""

    def merge(self, model):
        for _, blk in blocks(model):
            merge_linear(blk.attn.qkv, -blk.attn.qkv.delta.delta_weight())
        return model


class _MiscountedLoRA(LoRA):
    def expected_num_params(self, dims):
        return super().expected_num_params(dims) + 1


class _DeadParam(PetlModule):
    def __init__(self, dim):
        super().__init__()
        self.used = nn.Parameter(torch.zeros(dim))
        self.unused = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return x + self.used


class _DeadParamMethod(LoRA):
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


class _DropoutIgnoresEval(LoRA):
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


class _BatchMixingMethod(LoRA):
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


class _FixedLengthMethod(LoRA):
    def attach(self, model):
        for _, blk in blocks(model):
            set_slot(blk, "post", _FixedLength(model.embed_dim, 17))
        return model

    def expected_num_params(self, dims):
        return dims.depth * dims.embed_dim * 17


class _IgnoresNonViT(LoRA):
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


class _ImageOnlyMethod(LoRA):
    def attach(self, model):
        for _, blk in blocks(model):
            set_slot(blk, "post", _SquareGrid(model.embed_dim, model.num_prefix_tokens))
        return model

    def expected_num_params(self, dims):
        return dims.depth * dims.embed_dim


@pytest.mark.parametrize(
    ("cls", "check"),
    [
        (_NotIdentityLoRA, "identity_at_init"),
        (_WrongMergeLoRA, "merge"),
        (_MiscountedLoRA, "param_count"),
        (_DeadParamMethod, "training_step"),
        (_DropoutIgnoresEval, "dropout_modes"),
        (_BatchMixingMethod, "per_sample_independence"),
        (_FixedLengthMethod, "token_counts"),
        (_IgnoresNonViT, "non_vit_fails"),
        (_ImageOnlyMethod, "timm_api"),
    ],
)
def test_each_check_catches_its_bug(cls, check):
    cls.name = "lora"  # registry-independent; name only used in messages
    results = {r.name: r for r in run_checks(cls, only=[check])}
    assert not results[check].passed, f"{check} did not catch {cls.__name__}"


def test_lora_passes_everything():
    assert all(r.passed for r in run_checks(LoRA))


def test_lora_delta_matches_hand_computation_in_float64():
    torch.manual_seed(0)
    d, r = 16, 4
    delta = LoRADelta(d, r, scale=2.0, dropout=0.0, targets=("q", "v")).double()
    for p in delta.parameters():
        nn.init.normal_(p)
    x = torch.randn(3, 5, d, dtype=torch.float64)
    out = delta(x)
    a, b = delta.lora_a, delta.lora_b
    q = 2.0 * x @ a["q"].T @ b["q"].T
    v = 2.0 * x @ a["v"].T @ b["v"].T
    assert torch.allclose(out[..., :d], q) and torch.allclose(out[..., 2 * d :], v)
    assert torch.equal(out[..., d : 2 * d], torch.zeros_like(q))
    linear = nn.Linear(d, 3 * d).double()
    add_linear_delta(linear, delta)
    expect = x @ linear.weight.T + linear.bias + out
    assert torch.allclose(linear(x), expect)
    assert math.isclose(
        delta.delta_weight()[:d].sub(2.0 * b["q"] @ a["q"]).abs().max().item(), 0.0, abs_tol=1e-12
    )


def test_conformance_backbones_include_the_video_vit():
    assert KINDS == ("cls", "gap", "video")
    video = plain_backbone("video")
    assert video.patch_embed.proj.kernel_size == (2, 8, 8)
    assert video.patch_embed.num_patches == 32 and video.num_prefix_tokens == 0
    # the image-only method passes on both image backbones (16 patches) and fails on video (32)
    results = run_checks(_ImageOnlyMethod, only=["timm_api"])
    assert "32 patch tokens are not a square grid" in results[0].detail
