"""Built-in budgets work out of the box: smoke budgets offline, each saying what it is for."""

import os
import subprocess
import sys

import pytest

from pebench.budget import BUDGETS
from pebench.cli import main
from pebench.store import RunStore

SMOKE = sorted(b for b in BUDGETS if b.endswith("-smoke"))
IMAGE_SMOKE = [b for b in SMOKE if BUDGETS[b].video is None]


def test_the_smoke_budgets_record_weights_that_need_no_download():
    assert SMOKE == ["demo-smoke", "video-smoke", "vtab1k-smoke"]
    for name in SMOKE:
        budget = BUDGETS[name]
        assert budget.weights == "random", name  # their tiny test ViTs have no pretrained weights
        assert budget.weights_for(None, None) == "random"
        assert budget.weights_for(budget.backbone, None) == "random"
        assert budget.weights_for("vit_base_patch16_224", None) is None  # another backbone's own
        assert budget.weights_for(None, "/ckpt.pth") == "/ckpt.pth"  # --weights wins


@pytest.mark.slow
@pytest.mark.parametrize("budget", IMAGE_SMOKE)
def test_an_image_smoke_budget_runs_offline_with_its_own_defaults(tmp_path, budget):
    """Both used to fail: `could not fetch pretrained weights for 'pebench_vit_test_cls'`."""
    cmd = [sys.executable, "-m", "pebench.cli", "run", "--method", "linear", "--tasks",
           "demo/shapes", "--budget", budget, "--results", str(tmp_path), "--quiet"]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = RunStore(tmp_path).rows()
    assert rows and all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    assert {(r["budget"], r["backbone"], r["weights"]) for r in rows} == {
        (budget, BUDGETS[budget].backbone, "random")
    }


def test_the_video_smoke_budget_builds_its_backbone_offline(monkeypatch):
    """Its video test ViT has no hub weights: without the budget's `random` it refused to start."""
    from pebench.backbones import create_backbone, weights_tag

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    budget = BUDGETS["video-smoke"]
    weights = budget.weights_for(None, None)
    assert weights_tag(budget.backbone, weights) == "random"
    bb = create_backbone(
        budget.backbone, weights, image_size=budget.image_size, num_frames=budget.video.num_frames
    )
    assert bb.weights == "random" and bb.num_frames == budget.video.num_frames


def test_every_budget_says_what_it_is_for(capsys):
    assert all(b.purpose for b in BUDGETS.values()), [b.id for b in BUDGETS.values()]
    assert main(["list", "budgets"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n                     for: ") == len(BUDGETS)
    assert "checking a setup on real data" in out and "offline" in out


def test_check_v1_is_a_small_real_budget_for_image_suites():
    from pebench.datasets import get_task

    check = BUDGETS["check-v1"]
    real = BUDGETS["vtab1k-v2"]
    assert (len(check.trials()), len(check.seeds), check.weights) == (1, 1, None)
    assert check.epochs < real.epochs and check.subset is None  # every example of the real data
    assert (check.backbone, check.image_size) == (real.backbone, real.image_size)
    for task in ("vtab/cifar", "fgvc/cub", "demo/shapes"):
        check.check_task(get_task(task))  # an image budget: any image suite
