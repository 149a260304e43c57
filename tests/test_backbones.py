"""Backbones: timm models, weights from a local file, offline hub errors, random labelled."""

import pytest
import torch

from pebench.backbones import BackboneError, create_backbone, save_weights


def test_local_weights_file_is_loaded_exactly(tmp_path):
    torch.manual_seed(3)
    src = create_backbone("pebench_vit_test_cls", "random")
    path = tmp_path / "w.safetensors"
    save_weights(src.model, path)
    torch.manual_seed(4)
    loaded = create_backbone("pebench_vit_test_cls", str(path))
    assert loaded.weights.startswith("file:") and len(loaded.weights) == 5 + 16
    for (k, a), (_, b) in zip(
        src.model.state_dict().items(), loaded.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    resized = create_backbone("pebench_vit_test_cls", str(path), image_size=48)
    assert resized.model.pos_embed.shape[1] == 1 + 36  # timm resampled the position embedding


def test_torch_checkpoint_file_is_loaded(tmp_path):
    src = create_backbone("pebench_vit_test_gap", "random")
    path = tmp_path / "w.pth"
    torch.save(src.model.state_dict(), path)
    loaded = create_backbone("pebench_vit_test_gap", str(path))
    assert torch.equal(loaded.model.patch_embed.proj.weight, src.model.patch_embed.proj.weight)


def test_bad_weights_name_the_path(tmp_path):
    with pytest.raises(BackboneError, match=f"not found: {tmp_path / 'nope.pt'}"):
        create_backbone("pebench_vit_test_cls", str(tmp_path / "nope.pt"))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match=str(corrupt)):
        create_backbone("pebench_vit_test_cls", str(corrupt))


def test_offline_hub_error_says_what_to_do():
    with pytest.raises(BackboneError, match="--weights PATH"):
        create_backbone("vit_base_patch16_224.orig_in21k")


def test_unknown_backbone_suggests():
    with pytest.raises(BackboneError, match="Did you mean vit_base_patch16_224"):
        create_backbone("vit_bse_patch16_224")


def test_random_is_labelled_and_normalisation_comes_from_timm():
    b = create_backbone("vit_base_patch16_224.augreg_in21k", "random")
    assert b.weights == "random" and b.mean == (0.5, 0.5, 0.5)
    assert create_backbone("pebench_vit_test_cls", "random").image_size == 32


def test_a_sweep_hashes_and_loads_a_weights_file_once_and_runs_reuse_the_tag(tmp_path, monkeypatch):
    """Planning 3 methods hashes the file once and loads it once; a run handed the tag never
    hashes it (with a 0.4 GB ViT-B checkpoint and 20 methods this was thousands of passes)."""
    import pebench.backbone_names as N
    import pebench.backbones as B
    from pebench.run import RunOptions
    from pebench.sweep.plan import Selection, plan_sweeps

    path = tmp_path / "w.safetensors"
    save_weights(create_backbone("pebench_vit_test_cls", "random", image_size=32).model, path)
    hashed, loaded = [], []
    real_hash, real_load = N.sha256_file, B._from_file
    monkeypatch.setattr(N, "sha256_file", lambda p: hashed.append(p) or real_hash(p))
    monkeypatch.setattr(B, "_from_file", lambda *a: loaded.append(a[1]) or real_load(*a))
    sel = Selection(
        tasks="demo/shapes", budget="demo-smoke", weights=str(path), results_dir=tmp_path
    )
    sweeps = plan_sweeps(["linear", "lora", "bitfit"], sel, RunOptions(), checks=False)
    assert len(hashed) == 1 and len(loaded) == 1
    tag = sweeps[0].static["weights"]
    assert tag.startswith("file:") and {s.static["weights"] for s in sweeps} == {tag}
    bb = create_backbone("pebench_vit_test_cls", str(path), image_size=32, tag=tag)
    assert bb.weights == tag and len(hashed) == 1 and len(loaded) == 2  # loaded, not re-hashed


class _Payload:
    """Unpickling this calls ``os.system``: what a hostile ``.pth`` does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", [".pth", ".bin", ".pt"])
def test_a_weights_file_whose_unpickling_runs_code_is_refused(tmp_path, suffix):
    """timm < 1.0.12 unpickled --weights files with weights_only=False: the payload ran."""
    marker = tmp_path / "pwned"
    state = create_backbone("pebench_vit_test_cls", "random").model.state_dict()
    path = tmp_path / f"evil{suffix}"
    torch.save({**state, "extra": _Payload(marker)}, path)
    with pytest.raises(BackboneError, match=f"could not load weights file {path}.*cannot read"):
        create_backbone("pebench_vit_test_cls", str(path))
    assert not marker.exists()


def test_the_cli_refuses_a_code_running_weights_file_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": _Payload(marker)}, path)
    cmd = [sys.executable, "-m", "pebench.cli", "run", "--method", "linear", "--tasks",
           "demo/shapes", "--budget", "demo-smoke", "--weights", str(path), "--results",
           str(tmp_path / "r")]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2 and not marker.exists()
    assert out.stderr.strip().startswith(f"pebench: error: could not load weights file {path}")
    assert len(out.stderr.splitlines()) == 1, out.stderr  # torch's refusal spans 7 lines
    assert (
        "unsupported GLOBAL posix.system" in out.stderr and "not a plain state dict" in out.stderr
    )
    assert not (tmp_path / "r").exists()


def test_a_checkpoint_that_does_not_fit_names_the_keys(tmp_path):
    state = create_backbone("pebench_vit_test_cls", "random").model.state_dict()
    del state["blocks.0.norm1.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(BackboneError, match=r"missing blocks\.0\.norm1\.weight"):
        create_backbone("pebench_vit_test_cls", str(path))


def _google_npz(model, path) -> None:
    """Write ``model``'s weights as a Google ViT ``.npz`` (the JAX/Flax names and layouts).

    The inverse of ``timm.models.vision_transformer._load_weights``: kernels stored (in, out),
    the patch-embedding conv as HWIO, attention kernels split per head.
    """
    import numpy as np

    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    dim, heads = model.embed_dim, model.blocks[0].attn.num_heads
    w = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": sd["patch_embed.proj.bias"],
        "cls": sd["cls_token"],
        "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
        "Transformer/encoder_norm/scale": sd["norm.weight"],
        "Transformer/encoder_norm/bias": sd["norm.bias"],
    }
    for i in range(len(model.blocks)):
        b, p = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        for ln, norm in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            w[f"{b}{ln}/scale"], w[f"{b}{ln}/bias"] = sd[f"{p}{norm}.weight"], sd[f"{p}{norm}.bias"]
        att = f"{b}MultiHeadDotProductAttention_1/"
        qkv_w, qkv_b = sd[f"{p}attn.qkv.weight"], sd[f"{p}attn.qkv.bias"]
        for j, n in enumerate(("query", "key", "value")):
            rows = slice(j * dim, (j + 1) * dim)
            w[f"{att}{n}/kernel"] = qkv_w[rows].T.reshape(dim, heads, dim // heads)
            w[f"{att}{n}/bias"] = qkv_b[rows].reshape(heads, dim // heads)
        proj = sd[f"{p}attn.proj.weight"].reshape(dim, heads, dim // heads)
        w[f"{att}out/kernel"] = proj.transpose(1, 2, 0)
        w[f"{att}out/bias"] = sd[f"{p}attn.proj.bias"]
        for r in range(2):
            w[f"{b}MlpBlock_3/Dense_{r}/kernel"] = sd[f"{p}mlp.fc{r + 1}.weight"].T
            w[f"{b}MlpBlock_3/Dense_{r}/bias"] = sd[f"{p}mlp.fc{r + 1}.bias"]
    np.savez(path, **w)


def test_google_npz_weights_are_loaded_exactly(tmp_path):
    """The README documents Google .npz weights; they used to go to timm as a torch file
    (``Expected hasRecord("version")``)."""
    torch.manual_seed(5)
    src = create_backbone("pebench_vit_test_cls", "random").model
    path = tmp_path / "vit.npz"
    _google_npz(src, path)
    torch.manual_seed(6)
    loaded = create_backbone("pebench_vit_test_cls", str(path))
    assert loaded.weights.startswith("file:")
    want, got = src.state_dict(), loaded.model.state_dict()
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert torch.equal(got[key], value), key
    resized = create_backbone("pebench_vit_test_cls", str(path), image_size=48)
    assert resized.model.pos_embed.shape[1] == 1 + 36  # resampled by timm's npz loader


def test_an_npz_holding_pickles_is_refused_without_unpickling(tmp_path):
    import numpy as np

    marker = tmp_path / "pwned"
    good = tmp_path / "good.npz"
    _google_npz(create_backbone("pebench_vit_test_cls", "random").model, good)
    arrays = dict(np.load(good, allow_pickle=False))
    arrays["cls"] = np.array([_Payload(marker)], dtype=object)  # stored as a pickle
    path = tmp_path / "evil.npz"
    np.savez(path, **arrays)
    with pytest.raises(BackboneError, match=f"could not load weights file {path}"):
        create_backbone("pebench_vit_test_cls", str(path))
    assert not marker.exists()


def test_a_backbone_that_is_not_a_vit_is_a_model_type_error_in_one_line(tmp_path, capsys):
    """``--backbone resnet50`` was blamed on the hub (run) or a NotAViTError traceback (params)."""
    from pebench.cli import main
    from pebench.errors import PebenchError
    from pebench.vit import NotAViTError

    expect = (
        "backbone 'resnet50' cannot be adapted: pebench methods attach to timm VisionTransformer "
        "models; got timm.models.resnet.ResNet"
    )
    for weights in (None, "random"):
        with pytest.raises(BackboneError) as err:
            create_backbone("resnet50", weights)
        assert str(err.value).startswith(expect)
    assert issubclass(NotAViTError, PebenchError)
    results = tmp_path / "r"
    for argv in (
        ["params", "--method", "lora", "--backbone", "resnet50"],
        ["run", "--method", "lora", "--backbone", "resnet50", "--weights", "random",
         "--results", str(results)],
    ):  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"pebench: error: {expect}") and err.count("\n") == 1, err
    assert not results.exists()


@pytest.mark.parametrize(
    "name",
    ["pebench_vit_micro", "pebench_vit_micro.fractal_v1", "pebench_vit_test_cls",
     "pebench_video_test", "vit_base_patch16_224", "vit_base_patch16_224.augreg_in21k"],
)  # fmt: skip
def test_shipped_checkpoints_resolve_without_timm_as_timm_resolves_them(name):
    """Planning tags weights without importing timm (#25: a recorded rerun needs no torch); the
    checkpoint a name resolves to is the one timm's pretrained config names."""
    import timm

    from pebench.backbone_names import embedded_weights

    cfg = timm.models.get_pretrained_cfg(name)
    file = getattr(cfg, "file", None) if cfg is not None else None
    found = embedded_weights(name)
    assert (str(found[0]) if found else None) == file
    assert (found is not None) == (name.startswith("pebench_vit_micro"))


def test_an_unknown_tag_of_a_pebench_backbone_is_one_line(tmp_path, capsys):
    """It was timm's RuntimeError traceback ("Invalid pretrained tag")."""
    from pebench.cli import main

    backbone = ["--backbone", "pebench_vit_micro.nosuch"]
    code = main(["run", "--method", "lora", "--tasks", "demo/shapes", *backbone,
                 "--results", str(tmp_path / "r")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        "pebench: error: unknown weights tag 'nosuch' for 'pebench_vit_micro': pebench ships "
        "'fractal_v1'"
    ]
    assert not (tmp_path / "r").exists()
