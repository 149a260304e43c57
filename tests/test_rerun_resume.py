"""``--rerun`` is resumable and atomic (issue 27, item 6).

Before: after Ctrl-C, following the advice ("rerun the same command") with ``--rerun`` moved the
fresh rows to ``replaced/`` and restarted the whole grid; a kill during the moves followed by a
plain resume silently mixed old and new rows. Now a ``--rerun`` is journalled before any row
moves and resumed, with or without ``--rerun``, until its grid ran to the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from interrupts import like_a_terminal

from pebench.store import RunStore
from pebench.sweep import rerun as RR
from pebench.sweep.plan import plan_sweep

CMD = ["run", "--method", "linear", "--tasks", "demo/shapes,demo/count", "--budget", "demo-smoke",
       "--weights", "random", "--seeds", "0,1,2,3", "--quiet"]  # fmt: skip
#: the grid's runs: 2 tasks x (2 lrs searched + 4 seeds' finals). The Ctrl-C lands after the first
#: 2 fresh rows; the other 10 (about 2 s on 2 slots here) are the margin for a loaded machine to
#: deliver it (with 6 runs, a CI machine once finished the whole grid before the Ctrl-C landed)
RUNS = 12


def _cli(results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pebench.cli", *CMD, "--results", str(results), *extra]


def _rows(results: Path) -> dict[str, float]:
    """Run id -> its row file's mtime, for the rows the leaderboard reads."""
    return {p.name: p.stat().st_mtime for p in (results / "runs").glob("*.csv")}


@pytest.fixture()
def swept(tmp_path) -> Path:
    done = subprocess.run(_cli(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert len(_rows(tmp_path)) == RUNS
    return tmp_path


@pytest.mark.slow
def test_a_ctrl_c_rerun_resumed_by_the_same_command_keeps_its_fresh_rows(swept):
    old = _rows(swept)
    proc = subprocess.Popen(
        _cli(swept, "--rerun"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, preexec_fn=like_a_terminal(nice=10),
    )  # fmt: skip
    newest = max(old.values())
    deadline = time.time() + 300
    while time.time() < deadline and sum(t > newest for t in _rows(swept).values()) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
    proc.wait(timeout=120)
    fresh = {n: t for n, t in _rows(swept).items() if t > newest}
    assert 2 <= len(fresh) < RUNS and set(_rows(swept)) == set(fresh)  # no old row left in runs/
    again = subprocess.run(_cli(swept, "--rerun"), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "resuming the unfinished --rerun of " in again.stderr
    assert f"its {len(fresh)} fresh rows are kept" in again.stderr
    after = _rows(swept)
    assert len(after) == RUNS and all(after[n] == t for n, t in fresh.items())  # kept, not rerun
    replaced = list((swept / "runs" / "replaced").glob("*/*.csv"))
    assert sorted(p.name for p in replaced) == sorted(old)  # the old rows, each once
    # finished: the next --rerun starts a new one
    third = subprocess.run(_cli(swept, "--rerun"), capture_output=True, text=True, timeout=600)
    assert f"--rerun: {RUNS} recorded runs of this grid moved to" in third.stderr, third.stderr


def test_a_kill_during_the_moves_is_completed_by_a_plain_resume(swept, monkeypatch):
    sweep = plan_sweep(
        "linear", tasks="demo/shapes,demo/count", budget="demo-smoke", weights="random",
        seeds=[0, 1, 2, 3], results_dir=swept, checks=False, load_weights=False,
    )  # fmt: skip
    store = RunStore(swept)
    moves = []
    real = RunStore._move

    def killed_after_two(self, rid, folder):
        if len(moves) == 2:
            raise KeyboardInterrupt  # the process dies here: 2 of the rows moved
        moves.append(rid)
        return real(self, rid, folder)

    monkeypatch.setattr(RunStore, "_move", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        RR.announce([sweep], rerun=True)
    monkeypatch.setattr(RunStore, "_move", real)
    assert len(_rows(swept)) == RUNS - 2  # old rows still in runs/: a plain resume reused them
    line = RR.announce([sweep], rerun=False)
    assert "resuming the unfinished --rerun" in line and f"{RUNS - 2} older rows moved to" in line
    assert _rows(swept) == {}  # every old row set aside: nothing old is mixed with the new
    assert len(list((swept / "runs" / "replaced").glob("*/*.csv"))) == RUNS
    RR.finish([sweep])
    assert store.pending_rerun(sweep.grid_ids(sweep.tasks[0])) is None


def test_a_journal_that_is_not_one_is_ignored(tmp_path):
    store = RunStore(tmp_path)
    folder = tmp_path / "runs" / "replaced" / "x"
    folder.mkdir(parents=True)
    (folder / "rerun.json").write_text('{"started": "soon", "rids": 5}')
    assert store.pending_rerun(["a"]) is None
