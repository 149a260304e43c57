"""SSF: counts, init, the scale-and-shift equations in float64 at every point, exact merge."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pebench.backbones import tiny_vit
from pebench.method import MethodConfigError, prepare
from pebench.methods.ssf import SSF, ScaleShift
from pebench.vit import NotAViTError, PetlBlock, timm, vit_dims

from reference import (
    TOKEN_LAYOUTS,
    add_prefix_and_pos,
    assert_count,
    gelu,
    layer_norm,
    linear,
    merged_model,
    mhsa,
    model_pre_logits,
    patch_tokens,
    perturb,
    pre_logits,
    state_shapes,
)
from reference import prepared as _prepared

LINEARS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


# ------------------------------------------------------------------ independent reference --
def aff(model, h, key):
    """γ ⊙ h + β with the SSF tensors stored under ``key`` (``<key>.scale``, ``<key>.shift``)."""
    return h * model.get_parameter(f"{key}.scale") + model.get_parameter(f"{key}.shift")


def ref_block(model, i, t):
    """One timm block with SSF after norm1, qkv, proj, norm2, fc1 (before GELU) and fc2."""
    blk, p = model.blocks[i], f"blocks.{i}"
    h = aff(model, layer_norm(t, blk.norm1), f"{p}.attn_in")
    qkv = aff(model, linear(h, blk.attn.qkv), f"{p}.attn.qkv.ssf")
    o = mhsa(qkv, blk.attn.num_heads)
    t = t + aff(model, linear(o, blk.attn.proj), f"{p}.attn.proj.ssf")
    h = aff(model, layer_norm(t, blk.norm2), f"{p}.mlp_in")
    u = gelu(aff(model, linear(h, blk.mlp.fc1), f"{p}.mlp.fc1.ssf"))
    return t + aff(model, linear(u, blk.mlp.fc2), f"{p}.mlp.fc2.ssf")


def ref_prelogits(model, img):
    """The SSF-tuned ViT written out by hand (patch embed, blocks, final SSF, pooling).

    Official placement of the final SSF (``dongzelian/SSF`` ``forward_features``: after
    ``self.norm``): after the final LayerNorm on cls-token backbones; on avg-pool backbones
    (``norm`` = Identity) on every token, before the mean pooling and ``fc_norm``.
    """
    t = add_prefix_and_pos(model, aff(model, patch_tokens(model, img), "patch_embed.norm"))
    for i in range(len(model.blocks)):
        t = ref_block(model, i, t)
    if model.cls_token is None:
        t = aff(model, t, "norm")
        return layer_norm(t[:, -model.patch_embed.num_patches :].mean(1), model.fc_norm)
    return pre_logits(model, t, ssf_norm)


def ssf_norm(h, norm):
    """The final LayerNorm followed by its SSF (``<norm>.ssf``)."""
    return layer_norm(h, norm) * norm.ssf.scale + norm.ssf.shift


# ---------------------------------------------------------------------------------- helpers --
def prepared(kind="cls", img_size=32, **vit):
    return _prepared(SSF, kind, img_size, vit=vit)


# ------------------------------------------------------------------------------------ tests --
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("vit_base_patch16_224", 205_824),
        ("vit_small_patch16_224", 12 * 2 * (7 * 384 + 1536) + 4 * 384),
    ],
)
def test_vit_counts(name, expected):
    count = assert_count(SSF.build(), expected, name)
    assert count.inference_extra == 0  # mergeable


@pytest.mark.parametrize(("depth", "mlp_ratio"), [(1, 4.0), (2, 4.0), (3, 2.0)])
def test_count_follows_formula(depth, mlp_ratio):
    for kind in ("cls", "gap"):
        model = tiny_vit(kind, depth=depth, mlp_ratio=mlp_ratio)
        method = SSF()
        dims = vit_dims(model)
        hidden = int(64 * mlp_ratio)
        assert prepare(model, method, 5).method == method.expected_num_params(dims)
        assert method.expected_num_params(dims) == depth * 2 * (7 * 64 + hidden) + 4 * 64


@pytest.mark.parametrize("kind", ["cls", "gap"])
def test_trainable_set_and_keys(kind):
    plain = tiny_vit(kind)
    model, method, _ = prepared(kind)
    final = "norm.ssf" if kind == "cls" else "norm"  # avg-pool: on the tokens, before pooling
    where = ["patch_embed.norm", final]
    for i in range(2):
        where += [f"blocks.{i}.attn_in", f"blocks.{i}.mlp_in"]
        where += [f"blocks.{i}.{lname}.ssf" for lname in LINEARS]
    assert method.trainable(model) == {f"{w}.{p}" for w in where for p in ("scale", "shift")}
    got = state_shapes(model)
    assert all(got[k] == s for k, s in state_shapes(plain).items())  # backbone keys kept
    assert isinstance(model.blocks[0].attn.qkv, nn.Linear)  # still a Linear for other code
    assert not SSF.caps.identity_at_init and SSF.caps.mergeable


def test_init_distribution_and_std_zero_is_identity():
    torch.manual_seed(0)
    model, method, _ = prepared("cls", depth=6)
    scales = torch.cat([m.scale for m in model.modules() if isinstance(m, ScaleShift)])
    shifts = torch.cat([m.shift for m in model.modules() if isinstance(m, ScaleShift)])
    assert scales.numel() == shifts.numel() == method.expected_num_params(vit_dims(model)) // 2
    assert abs(scales.mean().item() - 1) < 3e-3 and abs(scales.std().item() - 0.02) < 3e-3
    assert abs(shifts.mean().item()) < 3e-3 and abs(shifts.std().item() - 0.02) < 3e-3
    plain = tiny_vit("gap").eval()
    model = copy.deepcopy(plain)
    prepare(model, SSF.build(overrides={"init_std": "0"}), 0)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), plain(x))


@pytest.mark.parametrize(("kind", "img_size"), TOKEN_LAYOUTS)
def test_equation_float64(kind, img_size):
    torch.manual_seed(1)
    plain = tiny_vit(kind, img_size=img_size).double().eval()
    model = copy.deepcopy(plain)
    method = SSF()
    prepare(model, method, num_classes=5)
    perturb(model)
    model.double().eval()
    img = torch.randn(2, 3, img_size, img_size, dtype=torch.float64)
    with torch.no_grad():
        out = model_pre_logits(model, img)
        torch.testing.assert_close(out, ref_prelogits(model, img), rtol=1e-10, atol=1e-10)
        assert (out - plain(img)).abs().max() > 1e-2  # not vacuous: SSF changes the features
        n = vit_dims(model).num_tokens
        t = torch.randn(3, n, 64, dtype=torch.float64)
        for i, blk in enumerate(model.blocks):
            assert isinstance(blk, PetlBlock)
            torch.testing.assert_close(blk(t), ref_block(model, i, t), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("kind", "img_size"), [k for k in TOKEN_LAYOUTS if k[0] == "cls"])
def test_merge_equivalence_and_plain_keys(kind, img_size):
    torch.manual_seed(2)
    plain = tiny_vit(kind, img_size=img_size)
    model, method, _ = prepared(kind, img_size)
    perturb(model)
    qkv = model.blocks[1].attn.qkv
    w0, b0 = qkv.weight.detach().clone(), qkv.bias.detach().clone()
    g, beta = qkv.ssf.scale.detach().clone(), qkv.ssf.shift.detach().clone()
    merged, _ = merged_model(model, method, torch.randn(3, 3, img_size, img_size), tol=1e-5)
    torch.testing.assert_close(merged.blocks[1].attn.qkv.weight, g[:, None] * w0)
    torch.testing.assert_close(merged.blocks[1].attn.qkv.bias, g * b0 + beta)
    expect = state_shapes(plain) | {"head.weight": (5, 64), "head.bias": (5,)}
    assert state_shapes(merged) == expect
    assert type(merged.patch_embed.norm) is nn.Identity
    assert all(type(blk) is timm.models.vision_transformer.Block for blk in merged.blocks)
    assert all(type(merged.blocks[0].get_submodule(n)) is nn.Linear for n in LINEARS)
    assert type(merged.norm if kind == "cls" else merged.fc_norm) is timm.layers.LayerNorm


def test_avg_pool_final_ssf_acts_before_pooling_and_fc_norm():
    """The official placement changes what fc_norm sees; after fc_norm the head would absorb it.

    With every other SSF at identity, a per-channel shift β before ``fc_norm`` changes the
    pre-logits by more than any affine map of the plain ones could (``fc_norm`` re-normalises
    ``mean + β``); the old placement (after ``fc_norm``) gives exactly ``γ ⊙ plain + β``.
    """
    torch.manual_seed(4)
    plain = tiny_vit("gap").eval()
    model = copy.deepcopy(plain)
    prepare(model, SSF.build(overrides={"init_std": "0"}), 0)
    assert isinstance(model.norm, ScaleShift) and not hasattr(model.fc_norm, "ssf")
    with torch.no_grad():
        model.norm.shift.copy_(torch.linspace(-1, 1, 64))
        x = torch.randn(3, 3, 32, 32)
        got, base = model(x), plain(x)
        tokens = plain.forward_features(x)[:, plain.num_prefix_tokens :] + model.norm.shift
        want = plain.fc_norm(tokens.mean(1))
    torch.testing.assert_close(got, want)
    assert (got - (base + model.norm.shift)).abs().max() > 0.1  # not the after-fc_norm placement


@pytest.mark.parametrize("kind", ["gap", "video"])
def test_avg_pool_ssf_is_not_mergeable_and_costs_inference(kind):
    from pebench.backbones.videomae import tiny_video

    model = tiny_video() if kind == "video" else tiny_vit("gap")
    method = SSF.build()
    count = prepare(model, method, 5)
    assert not method.mergeable_on(model) and count.inference_extra == count.method
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="not mergeable on an average-pool backbone"):
        method.merge(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    cls_model = tiny_vit("cls")
    assert prepare(cls_model, method, 5).inference_extra == 0 and method.mergeable_on(cls_model)


def test_merge_into_patch_embed_layernorm():
    torch.manual_seed(3)
    model, method, _ = prepared("cls", embed_norm_layer="layernorm")
    assert "patch_embed.norm.ssf.scale" in method.trainable(model)
    perturb(model)
    keys = state_shapes(tiny_vit("cls", embed_norm_layer="layernorm")).keys()
    merged, _ = merged_model(model, method, torch.randn(2, 3, 32, 32), tol=1e-5)
    assert set(state_shapes(merged)) == set(keys) | {"head.weight", "head.bias"}
    assert type(merged.patch_embed.norm) is timm.layers.LayerNorm


def test_merge_without_bias_raises_and_changes_nothing():
    model, method, _ = prepared("cls", qkv_bias=False)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.qkv"):
        method.merge(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.blocks[0].attn.qkv.ssf is not None


def test_errors():
    with pytest.raises(NotAViTError, match="final LayerNorm"):
        SSF().attach(tiny_vit("cls", final_norm=False))
    with pytest.raises(MethodConfigError, match="init_std"):
        SSF.build(overrides={"init_std": "-1"})
    model, _, _ = prepared("cls")
    with pytest.raises(ValueError, match="already"):
        SSF().attach(model)
