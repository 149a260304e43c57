"""A weights file with a wrong-sized tensor is refused in one line naming it and both shapes.

torch's ``load_state_dict`` reports a size mismatch as a multi-line ``RuntimeError`` (a header
line, then one tab-indented line per tensor), which ended up inside pebench's one-line refusal.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from pebench.backbones import EMBEDDED, BackboneError, create_backbone
from pebench.cli import main

MICRO = "pebench_vit_micro"
QKV = "blocks.0.attn.qkv.weight"


def _micro_state() -> dict[str, torch.Tensor]:
    return load_file(str(EMBEDDED["pebench_vit_micro.fractal_v1"][0]))


def _run(weights, tmp_path) -> list:
    return ["run", "--method", "lora", "--tasks", "demo/shapes", "--budget", "demo-smoke",
            "--backbone", MICRO, "--weights", str(weights),
            "--results", str(tmp_path / "r")]  # fmt: skip


def test_a_safetensors_file_with_a_wrong_sized_tensor_is_one_line(tmp_path, capsys):
    state = _micro_state()
    want = tuple(state[QKV].shape)
    state[QKV] = torch.zeros(10, 7)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    assert main(_run(path, tmp_path)) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"pebench: error: could not load weights file {path}")
    assert f"tensor {QKV} has shape (10, 7), the backbone expects {want}" in err
    assert not (tmp_path / "r").exists()  # nothing ran, nothing was written


def test_a_pth_file_with_several_wrong_sized_tensors_is_one_line(tmp_path, capsys):
    state = _micro_state()
    for i in range(3):
        state[f"blocks.{i}.attn.qkv.weight"] = torch.zeros(10, 7)
    state["blocks.0.norm1.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    assert main(_run(path, tmp_path)) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    # the first in the model's order, then how many more and which
    assert "tensor blocks.0.norm1.weight has shape (3,), the backbone expects (96,)" in err
    assert "3 more tensors have another shape: blocks.0.attn.qkv.weight, blocks.1.attn" in err
    assert "\t" not in err and "torch.Size" not in err
    assert not (tmp_path / "r").exists()


def test_create_backbone_names_the_tensor_and_both_shapes(tmp_path):
    model = create_backbone("pebench_vit_test_cls", "random").model
    state = model.state_dict()
    want = tuple(state["blocks.0.mlp.fc1.bias"].shape)
    state["blocks.0.mlp.fc1.bias"] = torch.zeros(want[0] + 1)
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(BackboneError) as err:
        create_backbone("pebench_vit_test_cls", str(path))
    text = str(err.value)
    assert "\n" not in text
    assert f"tensor blocks.0.mlp.fc1.bias has shape ({want[0] + 1},), the backbone expects " in text
    assert f"expects ({want[0]},)" in text
