"""The conformance suite, parametrized by the registry, and proof that each check can fail."""

import math

import pytest
import torch
from broken_methods import (
    BatchMixingMethod,
    DeadParamMethod,
    DropoutIgnoresEval,
    FixedLengthMethod,
    IgnoresNonViT,
    ImageOnlyMethod,
    MiscountedLoRA,
    NotIdentityLoRA,
    WrongMergeLoRA,
)
from torch import nn

from pebench.conformance import CHECKS, KINDS, plain_backbone, run_checks
from pebench.methods import get_method_class, registry
from pebench.methods.lora import LoRA, LoRADelta
from pebench.vit import add_linear_delta


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("name", registry.names())
def test_registered_method_conforms(name, check):
    CHECKS[check](get_method_class(name))


@pytest.mark.parametrize(
    ("cls", "check"),
    [
        (NotIdentityLoRA, "identity_at_init"),
        (WrongMergeLoRA, "merge"),
        (MiscountedLoRA, "param_count"),
        (DeadParamMethod, "training_step"),
        (DropoutIgnoresEval, "dropout_modes"),
        (BatchMixingMethod, "per_sample_independence"),
        (FixedLengthMethod, "token_counts"),
        (IgnoresNonViT, "non_vit_fails"),
        (ImageOnlyMethod, "timm_api"),
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
    results = run_checks(ImageOnlyMethod, only=["timm_api"])
    assert "32 patch tokens are not a square grid" in results[0].detail
