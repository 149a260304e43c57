"""prepare(): the core owns freezing, the head and parameter accounting."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from pebench.backbones import tiny_vit
from pebench.method import (
    Caps,
    Method,
    MethodConfigError,
    prepare,
    tunable_state_dict,
)
from pebench.methods import build_method
from pebench.vit import NotAViTError, PetlModule, blocks, set_slot

from reference import assert_count, count_on_meta


def test_prepare_freezes_backbone_and_creates_head():
    model = tiny_vit("cls")
    count = prepare(model, build_method("linear"), 7)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight", "head.bias"]
    assert count.head == 65 * 7 and count.method == 0
    assert count.backbone == sum(
        p.numel() for n, p in model.named_parameters() if not n.startswith("head")
    )


def test_lora_counts_on_vit_b16_and_scale_with_rank():
    for r in (1, 8, 16):
        count, formula = count_on_meta(build_method("lora", {"r": str(r)}))
        assert count.method == formula == 36_864 * r
        assert count.head == 76_900 and count.backbone == 85_798_656
        assert count.inference_extra == 0  # mergeable


def test_bitfit_and_full_closed_forms_on_vit_b16():
    for name, expected in (("bitfit", 102_912), ("full", 85_798_656)):
        assert_count(build_method(name), expected)


class _Bias(PetlModule):
    def __init__(self, dim):
        super().__init__()
        self.b = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return x + self.b


class _Sneaky(Method):
    name = "sneaky"
    title = "declares a backbone tensor without saying so"

    def attach(self, model):
        return model

    def trainable(self, model):
        return {"blocks.0.norm1.weight"}


class _HeadGrabber(_Sneaky):
    def trainable(self, model):
        return {"head.weight"}


class _Copy(Method):
    name = "copy"
    title = "returns a new model"

    def attach(self, model):
        return tiny_vit("cls")


@pytest.mark.parametrize(
    ("cls", "msg"),
    [
        (_Sneaky, "caps.unfreezes_backbone is False"),
        (_HeadGrabber, "must not declare head"),
        (_Copy, "in place"),
    ],
)
def test_prepare_rejects_inconsistent_methods(cls, msg):
    with pytest.raises(ValueError, match=msg):
        prepare(tiny_vit("cls"), cls(), 3)


def test_non_vit_is_refused():
    with pytest.raises(NotAViTError, match="Sequential"):
        prepare(nn.Sequential(nn.Linear(3, 3)), build_method("lora"), 3)


def test_shared_tensor_is_counted_once():
    class Shared(Method):
        name = "shared"
        title = "one bias shared by every block"

        def attach(self, model):
            shared = _Bias(model.embed_dim)
            model.add_module("shared_bias", shared)
            for _, blk in blocks(model):
                set_slot(blk, "post", shared)  # the same module in every block
            return model

        def expected_num_params(self, dims):
            return dims.embed_dim

    model = tiny_vit("cls")
    count = prepare(model, Shared(), 3)
    assert count.method == 64
    assert count.inference_extra == 64
    assert len([k for k in tunable_state_dict(model) if k.endswith(".b")]) == 1


def test_config_errors_name_the_key_and_allowed_fields():
    with pytest.raises(MethodConfigError, match="unknown config key 'rank'.*r: int"):
        build_method("lora", {"rank": "4"})
    with pytest.raises(MethodConfigError, match="bad value 'abc' for config key 'r': expected int"):
        build_method("lora", {"r": "abc"})
    with pytest.raises(MethodConfigError, match="'qv' \\| 'noah_qkv'"):
        build_method("lora", {"form": "q"})
    with pytest.raises(MethodConfigError, match="r must be >= 1"):
        build_method("lora", {"r": "0"})
    with pytest.raises(MethodConfigError, match="unknown preset 'big'.*default, noah_qkv"):
        build_method("lora.big")


def test_config_bool_and_json_parsing():
    @dataclass(frozen=True)
    class Cfg:
        flag: bool = False
        sizes: tuple = (1,)

    from pebench.config import parse_field

    assert parse_field(Cfg, "flag", "true") is True
    assert parse_field(Cfg, "sizes", "[2, 3]") == [2, 3]
    with pytest.raises(MethodConfigError):
        parse_field(Cfg, "flag", "maybe")


def test_caps_default_identity():
    assert Caps().identity_at_init and not Caps().mergeable
