"""The Hugging Face peft bridge (``--method peft:<type>``)."""

import copy
import dataclasses
import typing

import pytest
import torch

peft = pytest.importorskip("peft")

from sweeps import run_sweep  # noqa: E402

from pebench._compat import import_timm  # noqa: E402
from pebench.backbones import tiny_vit  # noqa: E402
from pebench.conformance import CHECKS, images, perturb_trainable  # noqa: E402
from pebench.method import MethodConfigError, prepare  # noqa: E402
from pebench.methods import peft_bridge as pb  # noqa: E402
from pebench.methods._peft_specs import factor_pair  # noqa: E402
from pebench.methods.lora import LoRA  # noqa: E402
from pebench.registry import RegistryError  # noqa: E402
from pebench.vit import check_vit, vit_dims  # noqa: E402

timm = import_timm()
TYPES = ["lora", "adalora", "loha", "lokr", "ia3", "vera", "boft", "oft", "hra"]
# ViT-B/16 counts (method only, head excluded) of the default configs, from the formulas
VIT_B = {
    "lora": 12 * 8 * (768 + 2304),  # r(i+o) on qkv: 294,912
    "adalora": 12 * 12 * (768 + 2304 + 1),  # init_r(i+o+1): 442,512
    "loha": 12 * 2 * 8 * (768 + 2304),  # 2r(i+o): 589,824
    "lokr": 12 * (48 * 24 + 8 * (48 + 32)),  # W1 48x24 full, W2 48x32 at rank 8: 21,504
    "ia3": 12 * (2304 + 3072),  # qkv output + fc2 input: 64,512
    "vera": 12 * (2304 + 256),  # lambda_b (o) + lambda_d (r=256): 30,720
    "boft": 12 * (768 * 4 + 2304),  # 192 blocks 4x4 + output scale: 64,512
    "oft": 12 * 24 * (32 * 31 // 2),  # 24 blocks of 32x32 skew (upper triangle): 142,848
    "hra": 12 * 768 * 8,  # r Householder vectors of size i: 73,728
}


def _vit_b():
    with torch.device("meta"):
        return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)


def _count(cls, model=None, **overrides):
    model = model if model is not None else tiny_vit("cls")
    dims = vit_dims(model)  # before attach: a peft-wrapped qkv is no longer an nn.Linear
    method = cls.build(overrides=overrides or None)
    return prepare(model, method, 10).method, method.expected_num_params(dims)


# ------------------------------------------------------------------------------- conformance --
@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("peft_type", TYPES)
def test_conformance(peft_type, check):
    CHECKS[check](pb.peft_method_class(peft_type))


@pytest.mark.parametrize("peft_type", TYPES)
def test_vit_b16_count_matches_formula_and_reference(peft_type):
    count, expected = _count(pb.peft_method_class(peft_type), _vit_b())
    assert count == expected == VIT_B[peft_type]


# -------------------------------------------------------------------- same as built-in LoRA --
def test_peft_lora_counts_equal_builtin_lora():
    for make in (_vit_b, lambda: tiny_vit("cls"), lambda: tiny_vit("gap")):
        builtin = prepare(make(), LoRA.build("noah_qkv"), 10).method
        ours = prepare(make(), pb.peft_method_class("lora").build(), 10).method
        assert ours == builtin


@pytest.mark.parametrize("kind", ["cls", "gap"])
def test_peft_lora_equals_builtin_lora_with_same_weights(kind):
    torch.manual_seed(0)
    plain = tiny_vit(kind, img_size=48).eval()
    ref, ours = copy.deepcopy(plain), copy.deepcopy(plain)
    prepare(ref, LoRA.build("noah_qkv"), 5)
    prepare(ours, pb.peft_method_class("lora").build(), 5)  # r=8, lora_alpha=8: scale 1
    perturb_trainable(ref, scale=0.1)  # B is zero at init: compare non-trivial updates
    with torch.no_grad():
        ours.head.load_state_dict(ref.head.state_dict())
        for b_ref, b_ours in zip(ref.blocks, ours.blocks, strict=True):
            delta, qkv = b_ref.attn.qkv.delta, b_ours.attn.qkv
            qkv.lora_A["default"].weight.copy_(delta.lora_a["qkv"])
            qkv.lora_B["default"].weight.copy_(delta.lora_b["qkv"])
    x = images(3, img_size=48)
    with torch.no_grad():
        a, b, base = ref.eval()(x), ours.eval()(x), plain.forward_features(x)
    assert not torch.allclose(ref.forward_features(x), base, atol=1e-3)  # the update matters
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------- config / --set --
def test_config_type_hints_resolve_and_defaults_target_qkv():
    for t in TYPES:
        cls = pb.peft_method_class(t)
        hints = typing.get_type_hints(cls.Config)
        assert hints["target_modules"] is str
        assert cls.Config().target_modules == ("qkv,fc2" if t == "ia3" else "qkv")
    hints = typing.get_type_hints(pb.peft_method_class("lora").Config)
    assert hints["r"] is int and hints["lora_dropout"] is float and hints["use_rslora"] is bool
    for hidden in ("fan_in_fan_out", "bias", "modules_to_save", "exclude_modules"):
        assert hidden not in hints


def test_set_overrides_change_count_per_formula():
    d, h, depth = 64, 256, 2
    lora = pb.peft_method_class("lora")
    got, exp = _count(lora, r="4", target_modules="qkv,proj")
    assert got == exp == depth * (4 * (d + 3 * d) + 4 * (d + d))
    got, exp = _count(lora, target_modules=["fc1", "fc2"], lora_bias="true")
    assert got == exp == depth * (8 * (d + h) + h + 8 * (h + d) + d)
    got, exp = _count(lora, use_dora="yes")  # + magnitude vector (o)
    assert got == exp == depth * (8 * (d + 3 * d) + 3 * d)
    got, exp = _count(pb.peft_method_class("ia3"), target_modules="qkv,fc1,fc2")
    assert got == exp == depth * (3 * d + h + h)  # fc1 is not feedforward: scales its output
    got, exp = _count(pb.peft_method_class("vera"), r="16", target_modules="qkv,fc1")
    assert got == exp == depth * (3 * d + 16 + h + 16)
    got, exp = _count(pb.peft_method_class("adalora"), init_r="4")
    assert got == exp == depth * 4 * (d + 3 * d + 1)
    got, exp = _count(pb.peft_method_class("boft"), boft_block_size="0", boft_block_num="8")
    assert got == exp == depth * (8 * 8 * 8 + 3 * d)
    got, exp = _count(pb.peft_method_class("oft"), oft_block_size="16", block_share="true")
    assert got == exp == depth * (16 * 15 // 2)
    got, exp = _count(pb.peft_method_class("lokr"), r="2", decompose_both="true")
    assert got == exp == depth * (2 * (12 + 8) + 2 * (16 + 8))  # 192=12x16, 64=8x8, both low rank
    got, exp = _count(pb.peft_method_class("hra"), r="4", target_modules="fc2")
    assert got == exp == depth * h * 4


def test_lokr_factorization_matches_peft():
    from peft.tuners.lokr.layer import factorization

    for n in [1, 7, 12, 64, 96, 192, 256, 768, 2304, 3072, 1000]:
        for f in [-1, 0, 2, 3, 4, 8, 16, 50]:
            assert factor_pair(n, f) == factorization(n, f), (n, f)


def test_bad_config_values_raise_clear_errors():
    lora = pb.peft_method_class("lora")
    with pytest.raises(MethodConfigError, match="head.*qkv"):
        lora.build(overrides={"target_modules": "qkv,head"})
    with pytest.raises(MethodConfigError, match="unknown config key 'fan_in_fan_out'"):
        lora.build(overrides={"fan_in_fan_out": "true"})
    with pytest.raises(MethodConfigError, match="expected int"):
        lora.build(overrides={"r": "four"})
    with pytest.raises(MethodConfigError, match="feedforward_modules"):
        pb.peft_method_class("ia3").build(overrides={"target_modules": "qkv"})
    with pytest.raises(MethodConfigError, match="not supported for DoRA"):  # peft's own check
        lora.build(overrides={"use_dora": "true", "lora_bias": "true"})


def test_oft_block_size_must_divide_every_target():
    method = pb.peft_method_class("oft").build(overrides={"oft_block_size": "24"})
    with pytest.raises(ValueError, match="oft_block_size=24 does not divide in_features 64"):
        prepare(tiny_vit("cls"), method, 3)


# ---------------------------------------------------------------- structure / merge / modes --
def test_backbone_keys_move_under_base_layer_and_trainable_is_structural():
    model = tiny_vit("cls")
    method = pb.peft_method_class("adalora").build()
    prepare(model, method, 3)
    assert method.backbone_key("blocks.1.attn.qkv.weight", model) == (
        "blocks.1.attn.qkv.base_layer.weight"
    )
    assert method.backbone_key("blocks.1.mlp.fc1.weight", model) == "blocks.1.mlp.fc1.weight"
    names = method.trainable(model)
    assert names == {
        f"blocks.{i}.attn.qkv.lora_{m}.default" for i in range(2) for m in ("A", "B", "E")
    }
    assert "blocks.0.attn.qkv.ranknum.default" not in dict(model.named_parameters())


def test_merge_returns_a_plain_timm_vit():
    method = pb.peft_method_class("ia3").build()
    model = tiny_vit("gap")
    prepare(model, method, 3)
    perturb_trainable(model)
    merged = method.merge(copy.deepcopy(model))
    assert not pb.tuner_layers(merged) and not hasattr(merged, "peft_config")
    check_vit(merged)  # qkv / fc2 are nn.Linear again


def test_dropout_active_in_train_only():
    model = tiny_vit("cls")
    prepare(model, pb.peft_method_class("lora").build(overrides={"lora_dropout": "0.5"}), 3)
    perturb_trainable(model, scale=0.5)
    x = images()
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


def test_attach_keeps_train_mode_of_the_model():
    model = tiny_vit("cls").eval()
    prepare(model, pb.peft_method_class("lora").build(), 3)
    assert not any(m.training for _, m in pb.tuner_layers(model))


# ------------------------------------------------------------------ discovery and errors --
def test_available_types_and_metadata():
    available = pb.available_peft_types()
    assert set(TYPES) <= set(available)
    assert not {"prompt_tuning", "prefix_tuning", "p_tuning", "xlora", "poly"} & set(available)
    cls = pb.peft_method_class("PEFT:LoRA")
    assert cls is pb.peft_method_class("lora") and cls.name == "peft:lora"
    assert pb.peft_origin() == f"peft=={peft.__version__}"
    info = cls.build().describe()
    assert info["origin"] == pb.peft_origin() and info["expected_num_params"] == "closed form"
    assert cls.caps.identity_at_init and cls.caps.mergeable


def test_type_without_formula_builds_but_has_no_closed_form():
    generic = [t for t in pb.available_peft_types() if t not in pb.SPECS]
    assert generic, "expected peft types beyond the formula set"
    cls = pb.peft_method_class(generic[0])
    assert cls.build().describe()["expected_num_params"] == "not implemented"
    assert not cls.caps.mergeable
    with pytest.raises(NotImplementedError, match=generic[0]):
        _count(cls)


def test_unknown_type_lists_available_and_suggests():
    with pytest.raises(RegistryError) as err:
        pb.peft_method_class("lorra")
    msg = str(err.value)
    assert "Did you mean 'peft:lora'" in msg and "peft:vera" in msg and "peft:ia3" in msg
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("peft_type", ["prompt_tuning", "trainable_tokens"])
def test_type_that_cannot_target_a_vit_says_so(peft_type):
    with pytest.raises(ValueError, match=rf"{peft_type.upper()}'? cannot target a timm ViT"):
        pb.peft_method_class(peft_type)


@pytest.mark.parametrize("version", [None, "0.15.2"])
def test_missing_or_old_peft_gives_install_hint(monkeypatch, version):
    monkeypatch.setattr(pb, "peft_version", lambda: version)
    assert pb.available_peft_types() == []
    with pytest.raises(RegistryError, match=r'pip install "pebench\[peft\]"') as err:
        pb.peft_method_class("lora")
    assert version is None or "peft>=0.18, found 0.15.2" in str(err.value)


def test_config_json_is_canonical():
    method = pb.peft_method_class("lora").build(overrides={"target_modules": " proj , qkv "})
    assert method.config.target_modules == "proj,qkv"
    assert '"target_modules": "proj,qkv"' in method.config_json()
    assert dataclasses.asdict(method.config)["r"] == 8


# ------------------------------------------------------------------------------ the runner --
def _wired() -> bool:
    from pebench.methods import get_method_class

    try:
        return get_method_class("peft:lora") is pb.peft_method_class("lora")
    except (RegistryError, TypeError):
        return False


@pytest.mark.slow
def test_runner_smoke(tmp_path):
    from pebench.run import RunOptions
    from pebench.sweep.plan import plan_sweep

    if not _wired():
        pytest.skip("methods/__init__.py does not resolve peft:* names yet")

    rows = run_sweep(
        plan_sweep(
            "peft:lora",
            tasks="demo/shapes",
            budget="demo-smoke",
            weights="random",
            seeds=[0],
            results_dir=tmp_path,
            options=RunOptions(progress=False),
        )
    )
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"]
    final = rows[-1]
    assert final["method"] == "peft:lora" and final["method_origin"] == pb.peft_origin()
    assert final["params_method"] == 2 * 8 * (64 + 192)
