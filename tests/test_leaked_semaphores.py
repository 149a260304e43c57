"""A killed run leaves no semaphore behind: no ``resource_tracker`` warning after a Ctrl-C.

A stage is started by the forkserver, so a ``multiprocessing`` lock made there is a named POSIX
semaphore registered with the resource tracker the whole sweep shares; it is unregistered only
when the process exits normally. tqdm makes one for its first bar (even a disabled one): a stage
killed while training (its run stopped by Ctrl-C or ``--timeout``) left it registered, and the
tracker printed "There appear to be N leaked semaphore objects" when the sweep ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from budgets import budget_toml
from interrupts import cli_env, ctrl_c

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
LEAK = "leaked semaphore"


def bar_then_killed(chan) -> None:
    """A stage that opens a progress bar as training does, then is killed."""
    from tqdm.auto import tqdm

    for _ in tqdm(range(2), desc="train", leave=False, disable=True):
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_stage_killed_after_its_progress_bar_leaks_no_semaphore():
    code = (
        "import test_leaked_semaphores as T\n"
        "from pebench.run import StageError\n"
        "from pebench.stage import run_stage\n"
        "try:\n"
        "    run_stage('training', T.bar_then_killed, ())\n"
        "except StageError as err:\n"
        "    print(err)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "killed by SIGKILL" in done.stdout
    assert LEAK not in done.stderr and "resource_tracker" not in done.stderr, done.stderr


def _an_epoch_logged(logs: Path) -> bool:
    """Some run has logged an epoch: its training stage is past the creation of its bar."""
    for path in logs.glob("*.epochs.csv"):
        try:
            if len(path.read_text().splitlines()) >= 2:
                return True
        except OSError:
            pass
    return False


def test_ctrl_c_while_runs_train_prints_no_resource_tracker_warning(tmp_path):
    (tmp_path / "slow.toml").write_text(
        budget_toml(epochs=40, lr_grid=[1e-3, 3e-3], subset=160, description="slow test budget")
    )
    results = tmp_path / "r"
    cmd = [sys.executable, "-m", "pebench.cli", "run", "--method", "lora", "--tasks",
           "demo/shapes", "--budget", str(tmp_path / "slow.toml"), "--results", str(results),
           "--max-parallel", "2", "--threads", "1"]  # fmt: skip
    code, err, _ = ctrl_c(cmd, lambda: _an_epoch_logged(results / "logs"), 180)
    assert code == 130, err
    assert LEAK not in err and "resource_tracker" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("pebench")]
    assert lines == [], err  # the one "pebench: interrupted" line, nothing else
