"""ViT surgery primitives: output wrapping and qkv row slices."""

import copy

import pytest
import torch
from torch import nn

from pebench.backbones import tiny_vit
from pebench.vit import (
    NotAViTError,
    PetlOutputLayerNorm,
    PetlOutputLinear,
    output_wrapper,
    qkv_rows,
    timm,
    unwrap_output,
    vit_dims,
    wrap_output,
)


class Affine(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(dim, dtype=torch.float64))

    def forward(self, x):
        return x * self.scale + 1.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Linear(6, 4, dtype=torch.float64),
        lambda: nn.LayerNorm(4, dtype=torch.float64),
        lambda: timm.layers.LayerNorm(4, dtype=torch.float64),
    ],
)
def test_wrap_output_applies_module_after_layer_and_unwraps(make):
    torch.manual_seed(0)
    layer = make()
    base, keys = type(layer), set(layer.state_dict())
    x = torch.randn(2, 3, layer.weight.shape[-1], dtype=torch.float64)
    plain = layer(x)
    aff = Affine(4)
    assert wrap_output(layer, aff, "post_op") is layer
    assert isinstance(layer, PetlOutputLinear if base is nn.Linear else PetlOutputLayerNorm)
    assert output_wrapper(layer) is aff
    assert set(layer.state_dict()) == keys | {"post_op.scale"}
    assert torch.equal(layer(x), aff(plain))
    clone = copy.deepcopy(layer)
    assert torch.equal(clone(x), layer(x)) and output_wrapper(clone) is not aff
    assert unwrap_output(layer) is aff
    assert type(layer) is base and output_wrapper(layer) is None
    assert set(layer.state_dict()) == keys and torch.equal(layer(x), plain)


def test_wrap_output_refuses_other_layers_and_double_wrapping():
    with pytest.raises(NotAViTError, match="Conv2d"):
        wrap_output(nn.Conv2d(3, 4, 1), nn.Identity(), "out")
    lin = nn.Linear(3, 3)
    wrap_output(lin, nn.Identity(), "out")
    with pytest.raises(NotAViTError, match="PetlOutputLinear"):
        wrap_output(lin, nn.Identity(), "again")
    with pytest.raises(ValueError, match="already has an attribute 'weight'"):
        wrap_output(nn.Linear(3, 3), nn.Identity(), "weight")
    with pytest.raises(ValueError, match="no wrapped output"):
        unwrap_output(nn.Linear(3, 3))


def test_qkv_rows_from_dims_or_width():
    dims = vit_dims(tiny_vit("cls"))
    d = dims.embed_dim
    assert qkv_rows(dims, "q") == qkv_rows(d, "q") == slice(0, d)
    assert qkv_rows(d, "v") == slice(2 * d, 3 * d)
    assert qkv_rows(d, "kv") == slice(d, 3 * d) and qkv_rows(d, "qkv") == slice(0, 3 * d)
    with pytest.raises(ValueError, match="'qv'"):
        qkv_rows(d, "qv")


class _OldTimmAttention(nn.Module):
    """timm < 1.0.26's ``Attention.forward(x)``: no ``attn_mask`` or ``is_causal`` keywords."""

    def __init__(self, attn):
        super().__init__()
        self.inner = attn

    def forward(self, x):
        return self.inner(x)


def test_a_slotted_block_calls_attention_without_keywords_it_does_not_use():
    """timm's Attention takes ``attn_mask``/``is_causal`` only from 1.0.26 on; a block with a
    slot must run on the oldest timm pyproject allows (issue #23, item 1)."""
    from pebench.vit import PetlBlock, set_slot

    torch.manual_seed(0)
    model = tiny_vit()
    block = model.blocks[0]
    x = torch.randn(2, 5, block.norm1.normalized_shape[0])
    plain = block(x)
    set_slot(block, "post", nn.Identity())
    assert isinstance(block, PetlBlock)
    block.attn = _OldTimmAttention(block.attn)
    assert torch.equal(block(x), plain)
    with pytest.raises(TypeError, match="attn_mask"):  # asked for, it is passed on
        block(x, attn_mask=torch.zeros(5, 5, dtype=torch.bool))
