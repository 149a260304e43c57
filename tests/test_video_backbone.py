"""The VideoMAE-layout video backbone: tokens, position table, checkpoint conversion, counts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pebench.backbones import BackboneError, create_backbone, weights_tag
from pebench.backbones.videomae import (
    VideoVisionTransformer,
    example_input,
    input_shape,
    sinusoid_table,
    tiny_video,
)
from pebench.method import prepare
from pebench.methods.convpass import Convpass
from pebench.methods.full import Full
from pebench.methods.padapter import PAdapter
from pebench.metrics import flops_per_image
from pebench.vit import timm, vit_dims

from reference import gelu, softmax

TEST = "pebench_video_test"
VIT_B = "pebench_videomae_base_patch16_224"
EPS = 1e-6  # VideoMAE's LayerNorm eps


def _clips(n=2, seed=0, model=None):
    return example_input(model or tiny_video(), n, generator=torch.Generator().manual_seed(seed))


def _meta(name=VIT_B, **kw):
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, num_classes=0, **kw)


# ----------------------------------------------------------------------------------- layout --
def test_tiny_video_tokens_and_dims():
    model = tiny_video().eval()
    x = _clips()
    assert x.shape == (2, 3, 4, 32, 32)
    assert model.patch_embed(x).shape == (2, 32, 64)  # 4/2 · 32/8 · 32/8 tokens
    assert model.forward_features(x).shape == (2, 32, 64)
    assert model(x).shape == (2, 64)
    assert model.cls_token is None and model.num_prefix_tokens == 0
    assert isinstance(model.fc_norm, nn.LayerNorm) and isinstance(model.norm, nn.Identity)
    dims = vit_dims(model)
    assert (dims.num_patches, dims.num_tokens, dims.num_prefix_tokens) == (32, 32, 0)
    assert (dims.num_frames, dims.tubelet_size, dims.patch_size, dims.in_chans) == (4, 2, 8, 3)
    assert not dims.has_cls_token and not dims.learned_pos_embed
    assert dims.patch_volume == 3 * 2 * 8 * 8


def test_vit_b_video_layout():
    model = _meta()
    proj = model.patch_embed.proj
    assert isinstance(proj, nn.Conv3d) and proj.kernel_size == proj.stride == (2, 16, 16)
    assert proj.in_channels == 3 and proj.out_channels == 768
    dims = vit_dims(model)
    assert (dims.num_patches, dims.num_tokens, dims.depth, dims.num_heads) == (784, 784, 12, 12)
    assert (model.num_frames, model.tubelet_size) == (8, 2)
    assert model.patch_embed.grid_size == (14, 14) and model.patch_embed.temporal_size == 4
    assert model.fc_norm.eps == model.blocks[0].norm1.eps == EPS
    assert (
        isinstance(model.blocks[0].mlp.act, nn.GELU)
        and model.blocks[0].mlp.act.approximate == "none"
    )
    assert model.pretrained_cfg["mean"] == (0.485, 0.456, 0.406)
    assert model.pretrained_cfg["std"] == (0.229, 0.224, 0.225)


def test_tokens_are_time_major_tubelets():
    """Token i_t·16 + i_h·4 + i_w is the Conv3d of frames 2i_t..2i_t+1, rows/cols of its patch."""
    model = tiny_video().double()
    x = _clips(1).double()
    w, b = model.patch_embed.proj.weight, model.patch_embed.proj.bias
    tokens = model.patch_embed(x)[0]
    for i_t in range(2):
        for i_h in range(4):
            for i_w in range(4):
                cube = x[0, :, 2 * i_t : 2 * i_t + 2, 8 * i_h : 8 * i_h + 8, 8 * i_w : 8 * i_w + 8]
                expect = w.reshape(64, -1) @ cube.reshape(-1) + b
                n = i_t * 16 + i_h * 4 + i_w
                assert torch.allclose(tokens[n], expect, atol=1e-10)


def test_sinusoid_buffer_matches_formula_and_is_not_a_parameter():
    model = tiny_video()
    n, d = 32, 64
    ref = torch.tensor(
        [
            [
                (math.sin if j % 2 == 0 else math.cos)(p / 10000 ** (2 * (j // 2) / d))
                for j in range(d)
            ]
            for p in range(n)
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(model.pos_embed[0].double(), ref, atol=1e-7)
    assert model.pos_embed.dtype == torch.float32 and not model.pos_embed.requires_grad
    assert "pos_embed" not in dict(model.named_parameters())
    assert "pos_embed" not in model.state_dict()  # non-persistent: not part of checkpoints
    assert "pos_embed" in dict(model.named_buffers())
    big = sinusoid_table(784, 768)[0].double()
    for p, j in [(0, 0), (0, 1), (783, 0), (783, 767), (100, 301)]:
        fn = math.sin if j % 2 == 0 else math.cos
        assert math.isclose(big[p, j].item(), fn(p / 10000 ** (2 * (j // 2) / 768)), abs_tol=1e-6)
    model.init_weights()  # timm's init would randomise a pos_embed; the table must survive it
    assert torch.allclose(model.pos_embed[0].double(), ref, atol=1e-7)


def test_bad_clips_and_options_are_refused():
    model = tiny_video()
    with pytest.raises(ValueError, match=r"\(B, 3, 4, 32, 32\), got \(2, 3, 32, 32\)"):
        model(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"got \(1, 3, 8, 32, 32\)"):
        model(torch.zeros(1, 3, 8, 32, 32))
    with pytest.raises(ValueError, match="class_token=True"):
        VideoVisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=1, class_token=True)
    with pytest.raises(ValueError, match="global_pool='token'"):
        VideoVisionTransformer(
            img_size=32, patch_size=8, embed_dim=64, depth=1, global_pool="token"
        )
    with pytest.raises(ValueError, match="num_frames=5 must be a positive multiple"):
        tiny_video(num_frames=5)
    with pytest.raises(NotImplementedError, match="create the backbone"):
        model.set_input_size((48, 48))


def test_example_input_shapes():
    img = timm.create_model("pebench_vit_test_cls", num_classes=0)
    assert example_input(img).shape == (1, 3, 32, 32)
    assert input_shape(img, 3, image_size=48) == (3, 3, 48, 48)
    vid = tiny_video(num_frames=8, img_size=48)
    assert example_input(vid, 2).shape == (2, 3, 8, 48, 48)
    assert torch.equal(example_input(vid), torch.zeros(1, 3, 8, 48, 48))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(example_input(vid, generator=g1), example_input(vid, generator=g2))
    assert vid(example_input(vid, 2)).shape == (2, 64)


def test_flops_per_clip_closed_form():
    """FLOPs of one clip (2 per MAC): tubelet conv + linears (+ attention where torch counts it)."""
    model = tiny_video().eval()
    n, d, h, depth = 32, 64, 256, 2
    macs = n * d * (3 * 2 * 8 * 8) + depth * (n * d * 3 * d + n * d * d + 2 * n * d * h)
    attention = depth * 2 * n * n * d  # torch's CPU SDPA kernel has no FLOP formula
    assert flops_per_image(model, 32, torch.device("cpu")) in (2 * macs, 2 * (macs + attention))


# ----------------------------------------------------------------------------------- counts --
def test_vit_b_video_param_count_closed_form():
    model = _meta()
    d, h, depth = 768, 3072, 12
    patch = d * 3 * 2 * 16 * 16 + d
    block = (d * 3 * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d) + 4 * d
    expected = patch + depth * block + 2 * d  # fc_norm; no cls token, no pos-embed parameter
    assert expected == 86_236_416
    assert sum(p.numel() for p in model.parameters()) == expected
    count = prepare(model, Full.build(), num_classes=174)
    assert count.method == Full.build().expected_num_params(vit_dims(_meta())) == expected


def test_padapter_on_vit_b_video_counts_1195404():
    model = _meta()
    dims = vit_dims(model)
    assert dims.num_tokens == 784
    method = PAdapter.build("video")
    with torch.device("meta"):
        count = prepare(model, method, num_classes=174)
    assert count.method == method.expected_num_params(dims) == 1_195_404
    assert all(blk.post.prompt.shape == (1, 784, 32) for blk in model.blocks)


def test_convpass_convolves_each_frame_separately():
    """The bypass conv on video tokens = a 3×3 conv on each of the T/t frame grids (float64)."""
    model = tiny_video().eval()
    prepare(model, Convpass.build(overrides={"conv_init": "xavier", "dropout": 0.0}), 5)
    model.double()
    bypass = model.blocks[0].attn_branch
    assert bypass.grid == (4, 4) and bypass.num_prefix == 0
    z = torch.randn(2, 32, bypass.rank, dtype=torch.float64)
    out = bypass._conv_patches(z)
    w, b = bypass.conv.weight, bypass.conv.bias
    for f in range(2):
        frame = z[:, 16 * f : 16 * (f + 1)].reshape(2, 4, 4, -1).permute(0, 3, 1, 2)
        expect = F.conv2d(frame, w, b, padding=1).permute(0, 2, 3, 1).reshape(2, 16, -1)
        assert torch.allclose(out[:, 16 * f : 16 * (f + 1)], expect, atol=1e-12)
    z2 = z.clone()
    z2[:, 16:] += 1.0  # frame 1 changes: frame 0's conv output does not
    assert torch.equal(bypass._conv_patches(z2)[:, :16], out[:, :16])


# ------------------------------------------------------------------------------ checkpoints --
def _official_finetune(model, head_classes=7, seed=0):
    """``model``'s tensors renamed to VideoMAE's ``modeling_finetune`` keys (+ q/v biases)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        value = value + 0.1 * torch.randn(value.shape, generator=g)  # no zero biases, no ones
        if key.endswith("attn.qkv.bias"):
            q, _, v = value.chunk(3)
            out[key.replace("qkv.bias", "q_bias")] = q
            out[key.replace("qkv.bias", "v_bias")] = v
        else:
            out[key] = value
    d = model.embed_dim
    out["head.weight"], out["head.bias"] = torch.randn(head_classes, d), torch.randn(head_classes)
    return out


def _to_pretrain(official, decoder_dim=32):
    out = {"encoder." + k: v for k, v in official.items() if not k.startswith(("head.", "fc_norm"))}
    d = official["fc_norm.weight"].numel()
    out["encoder.norm.weight"], out["encoder.norm.bias"] = torch.rand(d), torch.rand(d)
    out["encoder_to_decoder.weight"] = torch.randn(decoder_dim, d)
    out["mask_token"] = torch.randn(1, 1, decoder_dim)
    out["decoder.blocks.0.attn.qkv.weight"] = torch.randn(3 * decoder_dim, decoder_dim)
    out["decoder.norm.weight"] = torch.ones(decoder_dim)
    out["decoder.head.weight"] = torch.randn(3 * 2 * 8 * 8, decoder_dim)
    return out


def _to_adaptformer(pretrain):
    """AdaptFormer ``convert.py``: split qkv.weight, move mlp.fc1/fc2 up one level."""
    out = {}
    for key, value in pretrain.items():
        if key.startswith("encoder.blocks.") and key.endswith("attn.qkv.weight"):
            for name, part in zip("qkv", value.chunk(3), strict=True):
                out[key.replace("qkv.weight", f"{name}_proj.weight")] = part
        else:
            out[key.replace(".mlp.fc", ".fc")] = value
    return out


def _reference_forward(sd, clips, heads=4, tubelet=2, patch=8):
    """VideoMAE's fine-tuning forward from the official tensors, float64, elementary maths."""
    sd = {k: v.double() for k, v in sd.items()}
    x = F.conv3d(clips.double(), sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"],
                 stride=(tubelet, patch, patch)).flatten(2).transpose(1, 2)  # fmt: skip
    b, n, d = x.shape
    pos = torch.tensor(
        [[p / 10000 ** (2 * (j // 2) / d) for j in range(d)] for p in range(n)], dtype=torch.float64
    )
    pos[:, 0::2], pos[:, 1::2] = torch.sin(pos[:, 0::2]), torch.cos(pos[:, 1::2])
    x = x + pos

    def ln(t, pre):
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + EPS) * sd[pre + ".weight"] + sd[pre + ".bias"]

    hd = d // heads
    for i in range(sum(k.endswith("attn.q_bias") for k in sd)):
        p = f"blocks.{i}."
        h = ln(x, p + "norm1")
        w = sd[p + "attn.qkv.weight"]
        q = h @ w[:d].T + sd[p + "attn.q_bias"]
        k = h @ w[d : 2 * d].T  # no k bias in VideoMAE
        v = h @ w[2 * d :].T + sd[p + "attn.v_bias"]
        q, k, v = (t.reshape(b, n, heads, hd).transpose(1, 2) for t in (q, k, v))
        att = softmax(q @ k.transpose(-1, -2) * hd**-0.5) @ v
        x = x + att.transpose(1, 2).reshape(b, n, d) @ sd[p + "attn.proj.weight"].T
        x = x + sd[p + "attn.proj.bias"]
        h = ln(x, p + "norm2")
        h = gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        x = x + h @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    return ln(x.mean(1), "fc_norm")


def test_official_finetune_checkpoint_loads_and_matches_reference(tmp_path):
    official = _official_finetune(tiny_video())
    path = tmp_path / "finetune_videomae.pth"
    torch.save({"module": official, "epoch": 3}, path)
    bb = create_backbone(TEST, weights=str(path))
    assert bb.weights == weights_tag(TEST, str(path)) and bb.weights.startswith("file:")
    assert (bb.num_frames, bb.image_size) == (4, 32)
    model = bb.model.eval()
    qkv_bias = model.blocks[1].attn.qkv.bias
    assert torch.equal(qkv_bias[:64], official["blocks.1.attn.q_bias"])
    assert torch.equal(qkv_bias[64:128], torch.zeros(64))
    assert torch.equal(qkv_bias[128:], official["blocks.1.attn.v_bias"])
    x = _clips(3, seed=4)
    with torch.no_grad():
        out = model(x).double()
    ref = _reference_forward(official, x)
    assert (out - ref).abs().max().item() < 1e-4
    assert (out - ref).abs().max().item() < 1e-4 * ref.abs().max().item() + 1e-5


def test_pretrain_and_adaptformer_layouts_load_the_encoder(tmp_path):
    official = _official_finetune(tiny_video(), seed=1)
    pretrain = _to_pretrain(official)
    torch.save({"model": pretrain}, tmp_path / "pretrain.pth")
    torch.save({"model": _to_adaptformer(pretrain)}, tmp_path / "pretrain_new.pth")
    a = create_backbone(TEST, weights=str(tmp_path / "pretrain.pth")).model.eval()
    b = create_backbone(TEST, weights=str(tmp_path / "pretrain_new.pth")).model.eval()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(sa["fc_norm.weight"], torch.ones(64))  # fresh, as VideoMAE/AdaptFormer
    assert torch.equal(sa["fc_norm.bias"], torch.zeros(64))
    assert torch.equal(sa["blocks.0.mlp.fc1.weight"], official["blocks.0.mlp.fc1.weight"])
    expect = dict(official, **{"fc_norm.weight": torch.ones(64), "fc_norm.bias": torch.zeros(64)})
    x = _clips(2, seed=5)
    with torch.no_grad():
        assert (a(x).double() - _reference_forward(expect, x)).abs().max().item() < 1e-4


def test_native_layout_and_safetensors_roundtrip(tmp_path):
    from pebench.backbones import save_weights

    src = tiny_video()
    save_weights(src, tmp_path / "w.safetensors")
    model = create_backbone(TEST, weights=str(tmp_path / "w.safetensors")).model
    x = _clips()
    with torch.no_grad():
        assert torch.equal(model.eval()(x), src.eval()(x))


def _write(tmp_path, sd, name="bad.pth"):
    torch.save({"model": sd}, tmp_path / name)
    return str(tmp_path / name)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: sd.pop("blocks.1.mlp.fc2.bias"), r"missing keys: blocks\.1\.mlp\.fc2\.bias"),
        (lambda sd: sd.update({"blocks.0.gamma_1": torch.ones(64)}), r"unknown keys: .*gamma_1"),
        (lambda sd: sd.pop("blocks.0.attn.v_bias"), r"only one of blocks\.0\.attn\.q_bias"),
        (lambda sd: sd.update({"norm.weight": torch.ones(64)}), "use_mean_pooling=False"),
        (lambda sd: sd.update({"pos_embed": torch.zeros(1, 32, 64)}), "learned position embed"),
        (lambda sd: sd.update({"fc_norm.bias": torch.zeros(65)}), r"fc_norm\.bias \(65,\) \(model"),
    ],
)  # fmt: skip
def test_bad_checkpoint_is_refused_naming_keys(tmp_path, edit, message):
    sd = _official_finetune(tiny_video())
    edit(sd)
    with pytest.raises(BackboneError, match=message):
        create_backbone(TEST, weights=_write(tmp_path, sd))


def test_pretrain_with_stray_keys_and_non_tensor_files_are_refused(tmp_path):
    pretrain = _to_pretrain(_official_finetune(tiny_video()))
    pretrain["teacher.proj.weight"] = torch.zeros(2)
    with pytest.raises(BackboneError, match=r"outside `encoder.`/decoder: teacher\.proj\.weight"):
        create_backbone(TEST, weights=_write(tmp_path, pretrain))
    with pytest.raises(BackboneError, match="blocks.0.x are not tensors"):
        create_backbone(TEST, weights=_write(tmp_path, {"blocks.0.x": 3}, "n.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="cannot read checkpoint .*junk.pth"):
        create_backbone(TEST, weights=str(tmp_path / "junk.pth"))


def test_the_pos_table_in_a_checkpoint_is_accepted_if_it_is_the_fixed_one(tmp_path):
    sd = _official_finetune(tiny_video())
    sd["pos_embed"] = sinusoid_table(32, 64)
    create_backbone(TEST, weights=_write(tmp_path, sd))


def test_no_hub_weights_and_random_is_labelled(tmp_path):
    with pytest.raises(BackboneError, match="has no hub weights.*--weights random"):
        create_backbone(TEST)
    with pytest.raises(BackboneError, match="has no hub weights"):
        weights_tag(VIT_B, None)
    with pytest.raises(BackboneError, match="weights file not found"):
        create_backbone(TEST, weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="no downloadable weights"):
        timm.create_model(TEST, pretrained=True)
    bb = create_backbone(TEST, weights="random")
    assert bb.weights == "random" and bb.num_frames == 4
    assert bb.mean == (0.485, 0.456, 0.406) and bb.image_size == 32
    image = create_backbone("pebench_vit_test_gap", weights="random")
    assert image.num_frames is None


def test_checkpoint_of_another_patch_size_names_the_shapes(tmp_path):
    other = _official_finetune(tiny_video(patch_size=4))
    with pytest.raises(BackboneError, match=r"patch_embed\.proj\.weight \(64, 3, 2, 4, 4\)"):
        create_backbone(TEST, weights=_write(tmp_path, other))
    # the weights do not depend on the clip length: a 4-frame checkpoint loads into 8 frames
    model = create_backbone(TEST, weights=_write(tmp_path, _official_finetune(tiny_video())),
                            num_frames=8).model  # fmt: skip
    assert vit_dims(model).num_tokens == 64
