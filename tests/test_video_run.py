"""The video path end to end through the CLI: prepare -> search -> final multi-view test -> row
-> leaderboard, on generated HMDB51-layout videos decoded by decord."""

import math

import pytest
import videogen

from pebench.budget import BudgetError, get_budget
from pebench.cli import main
from pebench.datasets import get_task
from pebench.store import RunStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hmdb(tmp_path_factory):
    root = tmp_path_factory.mktemp("hmdb51")
    # all 51 classes (the task's class count is checked), 3 train + 1 test video each
    return videogen.make_hmdb(
        root, classes=51, train_per_class=3, test_per_class=1, frames=12, width=64, height=48
    )


def test_adaptformer_on_hmdb51_runs_the_whole_protocol(hmdb, tmp_path, capsys):
    cache = tmp_path / "cache"  # run's --data-dir is the prepared cache, as for image suites
    prepare = ["prepare", "video/hmdb51", "--data-dir", str(hmdb), "--cache-dir", str(cache)]
    assert main([*prepare, "--quiet"]) == 0
    results = tmp_path / "results"
    argv = [
        "run",
        "--method",
        "adaptformer",
        "--tasks",
        "video/hmdb51",
        "--budget",
        "video-smoke",
        "--data-dir",
        str(cache),
        "--weights",
        "random",
        "--results",
        str(results),
        "--quiet",
    ]
    assert main(argv) == 0
    rows = RunStore(results).rows()
    budget = get_budget("video-smoke")
    search = [r for r in rows if r["phase"] == "search"]
    final = [r for r in rows if r["phase"] == "final"]
    assert len(search) == len(budget.trials()) and len(final) == len(budget.seeds)
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    for r in search:  # selection on the carved-out validation videos, never the test list
        assert 0 <= r["val_top1"] <= 1 and math.isnan(r["test_top1"])
    (f,) = final
    assert 0 <= f["test_top1"] <= 1 and f["data_skipped"] == 0
    assert f["data_format"] == get_task("video/hmdb51").data_format and f["data_manifest"]
    # FLOPs are per clip of 4 frames: 2 tubelets x 16 patches = 32 tokens
    assert f["flops_per_image"] > 0
    assert f["params_head"] == 64 * 51 + 51
    board = tmp_path / "lb.md"
    assert main(["leaderboard", "--results", str(results), "--output", str(board)]) == 0
    text = board.read_text()
    assert "## video" in text and "adaptformer" in text
    # rerunning is a no-op (resume by run_id)
    before = {p.name: p.read_bytes() for p in (results / "runs").glob("*.csv")}
    assert main(argv) == 0
    assert {p.name: p.read_bytes() for p in (results / "runs").glob("*.csv")} == before
    # decoding in DataLoader worker processes changes speed, never the numbers
    again = tmp_path / "again"
    argv_w = [*argv[: argv.index("--results")], "--results", str(again), "--quiet"]
    assert main([*argv_w, "--data-workers", "2"]) == 0
    rows_w = {r["run_id"]: r for r in RunStore(again).rows()}
    assert set(rows_w) == {r["run_id"] for r in rows}
    for r in rows:
        w = rows_w[r["run_id"]]
        assert w["status"] == "ok", w["error"]
        assert (w["train_loss"], w["val_top1"] if r["phase"] == "search" else w["test_top1"]) == (
            r["train_loss"],
            r["val_top1"] if r["phase"] == "search" else r["test_top1"],
        )


def test_budget_of_the_wrong_modality_is_refused():
    with pytest.raises(BudgetError, match="'video/hmdb51' is a video task but budget 'demo-v1'"):
        get_budget("demo-v1").check_task(get_task("video/hmdb51"))
    with pytest.raises(
        BudgetError, match="'demo/shapes' is an image task but budget 'video-smoke'"
    ):
        get_budget("video-smoke").check_task(get_task("demo/shapes"))
