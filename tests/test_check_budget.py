"""The offline real-data check and non-standard split sizes (#28 item 4).

``check-micro-v1`` checks a prepared real image suite on a CPU without the hub: the embedded micro
ViT at 32 px. ``pebench prepare --nonstandard-sizes`` accepts splits of other sizes than the
suite's (a pipeline on a laptop) and records it: the manifest and every row's ``data_format``
say ``<format>+nonstandard-sizes``, a lineage of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from noah_data import make_noah

from pebench.budget import get_budget
from pebench.datasets import get_task
from pebench.datasets.cache import CacheError, describe, load, prepare
from pebench.store import RunStore

#: a VTAB-1k kitti folder in NOAH's layout at a laptop's size (the suite's is 800/200/711)
SMALL = {"train800": 64, "val200": 32, "test": 64}
NONSTANDARD = "noah-jpeg+nonstandard-sizes"


@pytest.fixture
def small_kitti(tmp_path):
    make_noah(tmp_path / "raw", "kitti", SMALL, 4)
    return tmp_path


def test_the_check_budget_is_offline_on_the_micro_vit_at_32px():
    b = get_budget("check-micro-v1")
    assert (b.backbone, b.weights, b.image_size) == ("pebench_vit_micro", None, 32)
    assert (len(b.trials()), b.seeds, b.video) == (2, (0,), None)
    assert "offline" in b.purpose and "--image-size 32" in b.purpose


def test_nonstandard_sizes_are_refused_without_the_option(small_kitti):
    with pytest.raises(CacheError, match=r"split 'train800': 64 examples .* expected 800.*"
                       r"--nonstandard-sizes prepares it anyway"):  # fmt: skip
        prepare("vtab/kitti", "noah", small_kitti / "raw", small_kitti / "cache", 8)
    assert not (small_kitti / "cache" / "vtab" / "kitti" / "8px").exists()


def test_nonstandard_sizes_are_recorded_and_kept_apart(small_kitti):
    raw, cache = small_kitti / "raw", small_kitti / "cache"
    prepare("vtab/kitti", "noah", raw, cache, 8, nonstandard_sizes=True)
    manifest = json.loads((cache / "vtab/kitti/8px/manifest.json").read_text())
    entry = manifest["tasks"]["vtab/kitti"]
    assert manifest["data_format"] == entry["data_format"] == NONSTANDARD
    assert entry["sizes"] == {"test": 64, "train800": 64, "train800val200": 96, "val200": 32}
    spec = get_task("vtab/kitti")
    fmt, _ = describe(spec, cache, 8)
    assert fmt == NONSTANDARD  # what every row of a run on it records
    images, labels = load(spec, "train800val200", cache, 8)
    assert images.shape == (96, 8, 8, 3) and len(labels) == 96
    (again,) = prepare("vtab/kitti", "noah", raw, cache, 8, nonstandard_sizes=True)
    assert again.status == "up to date"
    # the standard lineage never shares the folder (real-size data prepared there is refused)
    make_noah(small_kitti / "std", "kitti", {"train800": 800, "val200": 200, "test": 711}, 4)
    with pytest.raises(CacheError, match=r"prepared from data format 'noah-jpeg\+nonstandard-"
                       r"sizes' \(--source noah\), not 'noah-jpeg'"):  # fmt: skip
        prepare("vtab/kitti", "noah", small_kitti / "std", cache, 8)


@pytest.mark.slow
def test_the_check_budget_runs_end_to_end_on_a_prepared_real_format_task(small_kitti):
    env = dict(os.environ, HF_HUB_OFFLINE="1")

    def pebench(*argv: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "pebench.cli", *argv]
        return subprocess.run(
            cmd, cwd=small_kitti, capture_output=True, text=True, env=env, timeout=600
        )

    prep = pebench("prepare", "vtab/kitti", "--source", "noah", "--data-dir", "raw", "--cache-dir",
                   "cache", "--image-size", "32", "--nonstandard-sizes", "--quiet")  # fmt: skip
    assert prep.returncode == 0, prep.stderr
    run = pebench("run", "--method", "linear", "--tasks", "vtab/kitti", "--budget",
                  "check-micro-v1", "--data-dir", "cache", "--results", "r", "--quiet")  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    rows = RunStore(small_kitti / "r").rows()
    assert sorted(r["phase"] for r in rows) == ["final", "search", "search"]
    assert {r["status"] for r in rows} == {"ok"}
    assert {r["data_format"] for r in rows} == {NONSTANDARD}
    assert {r["budget"] for r in rows} == {"check-micro-v1"}
    assert all(r["weights"].startswith("embedded:pebench_vit_micro") for r in rows)
    final = next(r for r in rows if r["phase"] == "final")
    assert final["n_test"] == SMALL["test"]
    board = pebench("leaderboard", "--results", "r")
    assert board.returncode == 0, board.stderr
    md = (small_kitti / "r" / "leaderboard.md").read_text(encoding="utf-8")
    assert f"data format `{NONSTANDARD}`" in md
