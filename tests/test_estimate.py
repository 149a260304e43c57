"""`pebench estimate`: images from the budget, FLOPs counted on the meta device."""

import json

import pytest

from pebench.cli import main
from pebench.datasets import get_task


def _estimate(capsys, *argv):
    assert main(["estimate", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_vtab_dtd_images_flops_and_hours(capsys):
    (lin, full) = _estimate(capsys, "--method", "linear,full", "--tasks", "vtab/dtd")
    test = get_task("vtab/dtd").sizes["test"]
    for e in (lin, full):
        assert e["budget"] == "vtab1k-v3" and e["backbone"].startswith("vit_base_patch16_224")
        # 6 trials x 3 search replicates + 5 seeds
        assert e["train_images"] == 100 * (6 * 3 * 800 + 5 * 1000)
        assert e["eval_images"] == 6 * 3 * 200 + 5 * test
    # ViT-B/16 @ 224 forward: 17.56 GMACs (attention included), head 768 x 47
    assert lin["forward_gflops"] == pytest.approx(35.13 + 2 * 768 * 47 / 1e9, abs=0.01)
    # the probe's backward never enters the backbone; full fine-tuning ~ 3x forward
    assert lin["train_step_gflops"] == pytest.approx(lin["forward_gflops"], rel=1e-4)
    assert 2.9 < full["train_step_gflops"] / full["forward_gflops"] < 3.0
    want = (
        lin["train_images"] * lin["train_step_gflops"] + lin["eval_images"] * lin["forward_gflops"]
    ) * 1e9
    assert lin["pflops"] * 1e15 == pytest.approx(want, rel=1e-9)
    assert lin["hours"] == pytest.approx(want / 150e12 / 3600, rel=1e-9)


def test_video_counts_clips_times_views(capsys):
    (e,) = _estimate(
        capsys,
        "--method",
        "adaptformer.r64",
        "--tasks",
        "video/hmdb51",
        "--budget",
        "video-v1",
        "--tflops",
        "300",
    )
    assert e["method"] == "adaptformer.r64" and e["tflops"] == 300
    trainval, test = 3_570, 1_530  # published list sizes; 10 % carved out for validation
    assert e["train_images"] == 90 * (3 * (trainval - trainval // 10) + 3 * trainval)
    assert e["eval_images"] == 3 * (trainval // 10) + 3 * test * 12  # 4 segments x 3 crops
    assert 150 < e["forward_gflops"] < 170  # ViT-B on 784 tokens


def test_bad_throughput_is_a_user_error(capsys):
    assert main(["estimate", "--method", "lora", "--tflops", "0"]) == 2
    assert "--tflops must be positive" in capsys.readouterr().err
