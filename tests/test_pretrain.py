"""The embedded micro ViT: its recipe, its hash, and the offline loading path."""

import re

import numpy as np
import pytest
import torch

from pebench.backbones import EMBEDDED, BackboneError, check_embedded, create_backbone, sha256_file
from pebench.datasets.fractals import class_systems, dataset
from pebench.pretrain import Recipe, model_card, pretrain

TAG = "pebench_vit_micro.fractal_v1"
PATH, SHA = EMBEDDED[TAG]


def test_fractal_source_data_is_deterministic_and_class_dependent():
    a, ya = dataset(6, 4, seed=0)
    b, yb = dataset(6, 4, seed=0)
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    assert a.shape == (24, 32, 32, 3) and np.bincount(ya).tolist() == [4] * 6
    assert not np.array_equal(class_systems(3, seed=0)[0], class_systems(3, seed=1)[0])
    assert (a.reshape(24, -1).max(axis=1) > 0).all()  # every image has a rendered attractor


def test_tiny_recipe_reproduces_the_loading_path(tmp_path):
    recipe = Recipe(num_classes=4, per_class=6, holdout_per_class=2, epochs=1, batch_size=8)
    out = tmp_path / "micro.safetensors"
    card = pretrain(recipe, out, progress=False)
    again = pretrain(recipe, tmp_path / "again.safetensors", progress=False)
    assert card["sha256"] == again["sha256"] == sha256_file(out)  # deterministic for a seed
    assert card["steps"] == 3 and 0.0 <= card["source_holdout_top1"] <= 1.0
    loaded = create_backbone("pebench_vit_micro", str(out))
    from safetensors.torch import load_file

    saved = load_file(str(out))
    assert set(saved) == set(loaded.model.state_dict())
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    text = model_card(card)
    assert card["sha256"] in text and "IFS fractal classes" in text


def test_embedded_checkpoint_matches_its_hash_and_model_card():
    assert PATH.is_file(), f"missing {PATH}"
    assert sha256_file(PATH) == SHA
    card = PATH.with_suffix(".md").read_text()
    assert f"`{SHA}`" in card
    acc = float(re.search(r"source-task accuracy \| ([\d.]+) %", card).group(1))
    assert acc > 100 / 200 * 5  # far above chance on the 200 source classes


def test_default_demo_backbone_loads_offline_from_the_embedded_file():
    bb = create_backbone("pebench_vit_micro")
    assert bb.weights == f"embedded:{TAG}@{SHA[:16]}"
    from safetensors.torch import load_file

    saved = load_file(str(PATH))
    assert torch.equal(bb.model.blocks[0].attn.qkv.weight, saved["blocks.0.attn.qkv.weight"])


def test_a_tampered_embedded_file_is_refused(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(PATH.read_bytes()[:-1] + b"\0")
    with pytest.raises(BackboneError, match=str(bad)):
        check_embedded(bad, SHA, TAG)


def test_pretrain_refuses_to_overwrite_the_shipped_checkpoint(capsys):
    """`pebench pretrain` with default options used to overwrite it; every demo run then failed."""
    from pebench.backbones import EMBEDDED
    from pebench.cli import main

    path, sha = EMBEDDED["pebench_vit_micro.fractal_v1"]
    before = path.read_bytes()
    assert main(["pretrain", "--out", str(path), "--epochs", "1"]) == 2
    assert "is the checkpoint shipped with pebench" in capsys.readouterr().err
    assert path.read_bytes() == before
