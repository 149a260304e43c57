"""The committed results and leaderboard: valid, complete for the demo suite, and fresh."""

from pathlib import Path

import pytest

from pebench import results as R
from pebench.report import leaderboard

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "results" / "runs"

pytestmark = pytest.mark.skipif(not any(RUNS.glob("*.csv")), reason="no committed results yet")


def test_committed_rows_are_valid_and_cover_the_demo_suite():
    rows = R.read_runs(ROOT / "results")
    finals = [r for r in rows if r["phase"] == "final" and r["status"] == "ok"]
    demo = {
        (r["method"], r["task"])
        for r in finals
        if r["suite"] == "demo" and r["weights"] != "random"
    }
    for method in (
        "linear",
        "full",
        "bitfit",
        "lora",
        "adaptformer",
        "arc",
        "arc_att",
        "padapter",
        "kadaptation",
        "lv_adapter",
    ):
        for task in ("demo/shapes", "demo/texture", "demo/count", "demo/orientation"):
            assert (method, task) in demo, f"no committed demo result for {method} on {task}"


def test_committed_leaderboard_is_fresh():
    assert not leaderboard.is_stale(ROOT / "results", ROOT / "leaderboard.md"), (
        "leaderboard.md is stale: run `pebench leaderboard` and commit the result"
    )
