"""The committed results and leaderboard: valid, complete for the demo suite, and fresh."""

from pathlib import Path

import pytest

from pebench.report import leaderboard
from pebench.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "results" / "runs"

pytestmark = pytest.mark.skipif(not any(RUNS.glob("*.csv")), reason="no committed results yet")


def test_committed_rows_are_valid_and_cover_the_demo_suite():
    rows = RunStore(ROOT / "results").rows()
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


def test_committed_rows_are_runs_of_the_current_code():
    """Every committed row names its method's current source (else it is not a current run)."""
    from pebench.method_source import method_source
    from pebench.methods import registry

    rows = RunStore(ROOT / "results").rows()
    current = {m: method_source(m) for m in {r["method"] for r in rows}}
    stale = sorted({r["method"] for r in rows if r["method_source"] != current[r["method"]]})
    origins = {r["method_origin"] for r in rows if r["method"] in stale} - {"builtin"}
    installed = {registry.origin(m) for m in stale} - {"builtin"}
    assert not stale, (
        f"the code of {stale} changed since its committed rows were run (method_source): rerun "
        "their sweeps into results/ and regenerate the leaderboard"
        + (f" (rows made with {sorted(origins)}, installed {sorted(installed)})" if origins else "")
    )


def test_constraints_pin_the_versions_the_committed_rows_record():
    """A floating upstream release must not turn the committed rows stale: CI installs the pins.

    CI once failed when peft 0.22 was released: ``peft:lora``'s committed rows name
    ``peft==0.21.2`` in their method_origin (and so in their method_source), and nothing pinned it.
    """
    pins = dict(
        line.split("#")[0].strip().split("==")
        for line in (ROOT / "constraints-cpu.txt").read_text().splitlines()
        if "==" in line.split("#")[0]
    )
    origins = {r["method_origin"] for r in RunStore(ROOT / "results").rows()} - {"builtin"}
    for origin in sorted(origins):
        name, version = origin.split("==")
        assert pins.get(name) == version, (
            f"committed rows were made with {origin}: constraints-cpu.txt must pin it"
        )


def test_committed_leaderboard_is_fresh():
    assert not leaderboard.is_stale(ROOT / "results", ROOT / "leaderboard.md"), (
        "leaderboard.md is stale: run `pebench leaderboard --results results` and commit the result"
    )


def test_committed_results_csv_and_plots_are_fresh(tmp_path):
    """Regenerating from the committed runs reproduces results.csv and the plots byte for byte."""
    copy = tmp_path / "results"
    (copy / "runs").mkdir(parents=True)
    for path in RUNS.glob("*.*"):  # rows and their records
        (copy / "runs" / path.name).write_bytes(path.read_bytes())
    reported = ROOT / "results" / leaderboard.REPORTED_CSV
    if reported.exists():
        (copy / reported.name).write_bytes(reported.read_bytes())
    out = leaderboard.generate(copy, tmp_path / "leaderboard.md")
    assert (tmp_path / "leaderboard.md").read_bytes() == (ROOT / "leaderboard.md").read_bytes()
    assert out["results_csv"].read_bytes() == (ROOT / "results" / "results.csv").read_bytes(), (
        "results/results.csv is stale: run `pebench leaderboard --results results` and commit "
        "the result"
    )
    committed = sorted(p.name for p in (ROOT / "results" / "plots").glob("*.png"))
    assert sorted(p.name for p in out["plots"]) == committed
    for path in out["plots"]:
        assert path.read_bytes() == (ROOT / "results" / "plots" / path.name).read_bytes(), (
            f"results/plots/{path.name} differs from a fresh rendering (same matplotlib?)"
        )
