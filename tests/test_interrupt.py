"""Ctrl-C during ``pebench run``: one line, no traceback, no failure row, no marker; the same
command then completes the sweep."""

from __future__ import annotations

import subprocess
import sys

from budgets import budget_toml
from interrupts import cli_env, ctrl_c, wait_for

from pebench.store import RunStore

#: runs of a few seconds each, so that Ctrl-C lands while runs are in progress
BUDGET = budget_toml(
    epochs=6, lr_grid=[1e-3, 3e-3], subset=160, description="interrupt test budget"
)
CMD = [sys.executable, "-m", "pebench.cli", "run", "--method", "lora", "--tasks", "demo/shapes",
       "--quiet", "--max-parallel", "2", "--threads", "1"]  # fmt: skip


def test_ctrl_c_stops_the_sweep_cleanly_and_the_rerun_completes_it(tmp_path):
    runs = tmp_path / "r" / "runs"
    (tmp_path / "slow.toml").write_text(BUDGET)
    cmd = [*CMD, "--budget", str(tmp_path / "slow.toml"), "--results", str(tmp_path / "r")]
    code, err, group = ctrl_c(cmd, lambda: runs.exists() and any(runs.glob("*.running")), 120, 60)
    assert code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    lines = [line for line in err.splitlines() if line.startswith("pebench:")]
    assert len(lines) == 1 and "interrupted" in lines[0] and "rerun the same command" in lines[0]
    assert not list(runs.glob("*.running")) and not list(runs.glob(".*.tmp*"))
    rows = RunStore(tmp_path / "r").rows()
    assert all(r["status"] == "ok" for r in rows)  # nothing recorded as a failure
    # no process of the interrupted sweep is left
    assert wait_for(lambda: subprocess.run(["pgrep", "-g", str(group)],
                                            capture_output=True).returncode != 0, 10)  # fmt: skip

    again = subprocess.run(cmd, capture_output=True, text=True, env=cli_env())
    assert again.returncode == 0, again.stderr
    rows = RunStore(tmp_path / "r").rows()
    assert len(rows) == 2 + 1 and all(r["status"] == "ok" for r in rows)  # 2 trials, 1 seed
