"""Ctrl-C during ``pebench run``: one line, no traceback, no failure row, no marker; the same
command then completes the sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pebench.store import RunStore
from tests.budgets import budget_toml

#: runs of a few seconds each, so that Ctrl-C lands while runs are in progress
BUDGET = budget_toml(
    epochs=6, lr_grid=[1e-3, 3e-3], subset=160, description="interrupt test budget"
)
CMD = [sys.executable, "-m", "pebench.cli", "run", "--method", "lora", "--tasks", "demo/shapes",
       "--quiet", "--max-parallel", "2", "--threads", "1"]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path.cwd())}


def _wait_for(predicate, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_ctrl_c_stops_the_sweep_cleanly_and_the_rerun_completes_it(tmp_path):
    runs = tmp_path / "r" / "runs"
    (tmp_path / "slow.toml").write_text(BUDGET)
    cmd = [*CMD, "--budget", str(tmp_path / "slow.toml"), "--results", str(tmp_path / "r")]
    # a terminal's Ctrl-C: SIGINT to the whole foreground process group
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        start_new_session=True,
    )
    try:
        assert _wait_for(lambda: runs.exists() and any(runs.glob("*.running")))
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    lines = [line for line in err.splitlines() if line.startswith("pebench:")]
    assert len(lines) == 1 and "interrupted" in lines[0] and "rerun the same command" in lines[0]
    assert not list(runs.glob("*.running")) and not list(runs.glob(".*.tmp*"))
    rows = RunStore(tmp_path / "r").rows()
    assert all(r["status"] == "ok" for r in rows)  # nothing recorded as a failure
    # no process of the interrupted sweep is left
    assert _wait_for(lambda: subprocess.run(["pgrep", "-g", str(proc.pid)],
                                            capture_output=True).returncode != 0, 10)  # fmt: skip

    again = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    assert again.returncode == 0, again.stderr
    rows = RunStore(tmp_path / "r").rows()
    assert len(rows) == 2 + 1 and all(r["status"] == "ok" for r in rows)  # 2 trials, 1 seed
