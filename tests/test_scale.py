"""The real scale on the CPU: ViT-B/16 at 224 px (random weights), LoRA, batch 64, through the
whole runner (plan, conformance gate, worker process, row) on a real-format VTAB-1k task.

One step per phase (the budget caps every split at 64 examples), so it takes about a minute;
it prints the measured figures (run with ``-s`` to see them)."""

from __future__ import annotations

import os

import pytest

from pebench.cli import main
from pebench.datasets.cache import prepare
from pebench.store import RunStore
from tests.budgets import budget_toml
from tests.noah_data import make_noah

BUDGET = budget_toml(
    batch_size=64, image_size=224, backbone="vit_base_patch16_224", weights="random",
    description="ViT-B/16 at 224 px, one step per phase",
)  # fmt: skip


@pytest.mark.slow
def test_vit_b16_at_224px_runs_through_the_runner_on_a_real_vtab_task(tmp_path, capsys):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    # dtd at its real sizes (800/200/1000/1880); test images are links to 64 files
    make_noah(raw, "dtd", {"train800": 800, "val200": 200, "test": 1880}, 47, 64)
    (report,) = prepare("vtab/dtd", "noah", raw, cache, 224)
    assert report.decoded == 800 + 200 + 1000 + 1880
    (tmp_path / "vitb.toml").write_text(BUDGET)
    code = main([
        "run", "--method", "lora", "--tasks", "vtab/dtd", "--budget", str(tmp_path / "vitb.toml"),
        "--data-dir", str(cache), "--results", str(tmp_path / "r"), "--quiet",
        "--max-parallel", "1", "--threads", str(os.cpu_count() or 1),
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    rows = {r["phase"]: r for r in RunStore(tmp_path / "r").rows()}
    final = rows["final"]
    assert final["status"] == "ok" and 0 <= final["test_top1"] <= 1
    assert final["params_method"] == 12 * 2 * 2 * 768 * 8  # 12 blocks, q and v, A and B, r 8
    # ViT-B/16 at 224 px: 17.6 GMAC per image, counted as 2 FLOPs per multiply-add
    assert final["flops_per_image"] == pytest.approx(35.2e9, rel=0.01)
    assert final["train_flops_per_image"] > 1.9 * final["flops_per_image"]
    gib = final["peak_mem_bytes"] / 2**30
    assert final["peak_mem_kind"] in ("cpu_state", "cpu_rss", "cuda_allocated")
    assert 1.0 < gib < 24.0  # activations of 64 images through 12 blocks, in float32
    with capsys.disabled():
        print(
            f"\nViT-B/16 224 px LoRA, batch 64 ({final['device']}): train "
            f"{final['train_images_per_s']:.2f} img/s, eval {final['eval_images_per_s']:.2f} "
            f"img/s, data {final['data_time_s'] / final['train_time_s']:.1%} of train time, "
            f"peak memory {gib:.2f} GiB ({final['peak_mem_kind']})"
        )
