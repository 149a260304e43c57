"""Selection on validation data: the rule, its diagnostics, and that it cannot change silently.

The attack: the winning search trial's process is SIGKILLed mid-run (preemption, OOM killer). The
old dispatcher launched the finals as soon as every search row existed, whatever its status, so
the finals retrained the *losing* learning rate and were recorded ``ok``. Now an unsettled trial
is run again (bounded), the finals wait for a settled grid or are recorded ``blocked``, and finals
of an earlier selection are retired to ``runs/stale/``.
"""

import math
import os
import shutil
import signal
import threading
import time

import pytest
from sweeps import run_sweep

from pebench.run import RunOptions
from pebench.selection import (
    edge,
    grid_text,
    parse_grid,
    select_trial,
    selection_fields,
    unsettled,
)
from pebench.store import RunStore
from pebench.sweep.dispatch import TRIAL_ATTEMPTS, dispatch
from pebench.sweep.executors import LocalExecutor
from pebench.sweep.plan import plan_sweep

SMOKE = dict(tasks="demo/shapes", budget="demo-smoke", weights="random", seeds=[0])
OPTIONS = RunOptions(progress=False, threads=1)  # identical float reductions in every process


def _row(trial, lr, val, status="ok", wd=1e-4):
    return dict(trial=trial, lr=lr, weight_decay=wd, val_top1=val, status=status, error="")


# ------------------------------------------------------------------------------- the rule --
def test_select_trial_best_val_then_smaller_lr():
    rows = [_row(0, 1e-3, 0.5), _row(1, 1e-2, 0.7), _row(2, 3e-2, 0.7), _row(3, 1e-1, 0.9, "oom")]
    assert select_trial(rows)["trial"] == 1
    assert select_trial([_row(0, 1e-3, math.nan)]) is None
    assert [r["trial"] for r in unsettled(rows + [_row(4, 1, 0.1, "diverged")])] == [3]


@pytest.mark.parametrize(
    ("lr", "wd", "expected"),
    [
        (1e-3, 1e-4, "lr-low"),
        (3e-3, 1e-4, ""),
        (1e-2, 1e-4, "lr-high"),
        (1e-2, 1e-3, "lr-high+wd-high"),
        (3e-3, 0.0, "wd-low"),
    ],
)
def test_edge_of_a_grid(lr, wd, expected):
    assert edge(lr, wd, [1e-3, 3e-3, 1e-2], [0.0, 1e-4, 1e-3]) == expected


def test_a_one_point_dimension_is_never_an_edge():
    assert edge(1e-3, 1e-4, [1e-3, 1e-2], [1e-4]) == "lr-low"
    assert edge(5e-3, 1e-4, [5e-3], [1e-4]) == ""


def test_grid_text_round_trips():
    text = grid_text([1e-2, 3e-4, 1e-3], [1e-4])
    assert text == "lr=0.0003,0.001,0.01 wd=0.0001"
    assert parse_grid(text) == ([3e-4, 1e-3, 1e-2], [1e-4])
    assert parse_grid("") == ([], [])
    fields = selection_fields(_row(1, 1e-2, 0.7), [1e-3, 1e-2], [1e-4])
    assert fields == {
        "val_top1": 0.7,
        "selection_grid": "lr=0.001,0.01 wd=0.0001",
        "selection_edge": "lr-high",
    }


# -------------------------------------------------------------------- a dying winning trial --
class KillingLocal(LocalExecutor):
    """The real local executor; the child of each run id in ``victims`` is SIGKILLed (n times)."""

    def __init__(self, victims: dict[str, int], **kw):
        super().__init__(**kw)
        self.victims = dict(victims)
        self.killed: list[str] = []

    def _run(self, spec, results_dir, timeout_s):
        if self.victims.get(spec.run_id, 0) > 0:
            self.victims[spec.run_id] -= 1
            args = (results_dir, spec.run_id)
            threading.Thread(target=self._kill_child, args=args, daemon=True).start()
        return super()._run(spec, results_dir, timeout_s)

    def _kill_child(self, results_dir, rid):
        deadline = time.time() + 120
        while time.time() < deadline:
            marker = RunStore(results_dir).marker(rid)
            if marker and marker.get("child_pid"):
                os.kill(marker["child_pid"], signal.SIGKILL)
                self.killed.append(rid)
                return
            time.sleep(0.005)


def _sweep(results, method="lora"):
    return plan_sweep(method, OPTIONS, results_dir=results, **SMOKE)


def _numbers(rows):
    keys = ("run_id", "phase", "trial", "lr", "status", "val_top1", "test_top1", "train_loss")
    return [tuple(r[k] for k in keys) for r in rows]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    results = tmp_path_factory.mktemp("clean")
    rows = run_sweep(_sweep(results))
    assert [r["status"] for r in rows] == ["ok"] * 3
    return results, rows


def _winner(rows):
    final = rows[-1]
    return next(r for r in rows if r["phase"] == "search" and r["trial"] == final["trial"])


def _csvs(results):
    return sorted(p.name for p in (results / "runs").glob("*.csv"))


@pytest.mark.slow
def test_final_rows_record_their_selection(uninterrupted):
    _, rows = uninterrupted
    final, win = rows[-1], _winner(rows)
    assert final["val_top1"] == win["val_top1"] == max(r["val_top1"] for r in rows[:2])
    assert final["selection_grid"] == "lr=0.001,0.01 wd=0.0001"
    assert final["selection_edge"] == ("lr-low" if final["lr"] == 1e-3 else "lr-high")
    assert rows[0]["selection_grid"] == rows[0]["selection_edge"] == ""  # search rows


@pytest.mark.slow
def test_killing_the_winning_trial_retries_it_and_gives_the_uninterrupted_result(
    uninterrupted, tmp_path
):
    clean, want = uninterrupted
    win = _winner(want)["run_id"]
    with KillingLocal({win: 1}) as ex:
        got = dispatch([_sweep(tmp_path)], ex)
    assert ex.killed == [win]  # the attack happened
    assert _numbers(got) == _numbers(want)
    assert _csvs(tmp_path) == _csvs(clean)  # no stale or extra final
    assert not (tmp_path / "runs" / "stale").exists()


@pytest.mark.slow
def test_a_trial_that_keeps_dying_blocks_the_finals_then_a_resume_completes(
    uninterrupted, tmp_path
):
    clean, want = uninterrupted
    win = _winner(want)["run_id"]
    with KillingLocal({win: TRIAL_ATTEMPTS}) as ex:
        blocked = dispatch([_sweep(tmp_path)], ex)
    assert ex.killed == [win] * TRIAL_ATTEMPTS
    final = blocked[-1]
    assert final["status"] == "blocked" and final["trial"] == -1
    assert "finals not run on a partial grid" in final["error"]
    assert (
        "failed, child process was killed by SIGKILL (by the kernel's out-of-memory"
        in (final["error"])
    )  # what is known, not a guess at oom
    assert f"lr={_winner(want)['lr']:g}" in final["error"]
    # never on the losing lr: no final of a real trial exists
    assert [r for r in RunStore(tmp_path).rows() if r["phase"] == "final" and r["trial"] >= 0] == []
    resumed = run_sweep(_sweep(tmp_path))  # the same command again
    assert _numbers(resumed) == _numbers(want)
    assert _csvs(tmp_path) == _csvs(clean)  # the blocked placeholder is gone


@pytest.mark.slow
def test_finals_of_an_earlier_selection_are_retired(uninterrupted, tmp_path):
    clean, want = uninterrupted
    shutil.copytree(clean / "runs", tmp_path / "runs")
    sweep = _sweep(tmp_path)
    task = sweep.tasks[0]
    final = want[-1]
    loser = next(r for r in want[:2] if r["trial"] != final["trial"])
    # a final of the losing trial, as an earlier (interrupted) search would have selected
    old = sweep.base_row(task, "final", loser["trial"], loser["lr"], 1e-4, 0)
    RunStore(tmp_path).record(dict(final, **{k: old[k] for k in ("run_id", "trial", "lr")}))
    assert len(_csvs(tmp_path)) == 4
    rows = run_sweep(sweep)
    assert _numbers(rows) == _numbers(want)
    assert _csvs(tmp_path) == _csvs(clean)
    assert [p.name for p in (tmp_path / "runs" / "stale").iterdir()] == [f"{old['run_id']}.csv"]


# ------------------------------------------------------------------------- the leaderboard --
def test_leaderboard_shows_selections_and_never_averages_a_stale_final(tmp_path):
    import report_rows as tl

    from pebench.report import leaderboard as lb

    def trials(task, vals):
        for i, (lr, val) in enumerate(zip((1e-3, 1e-2), vals, strict=True)):
            tl.write(tmp_path, task=task, phase="search", trial=i, lr=lr, val_top1=val)

    trials("lbtest/alpha", (0.5, 0.8))  # trial 1 wins: the upper edge
    trials("lbtest/beta", (0.9, 0.4))  # trial 0 wins: the lower edge
    tl.write(tmp_path, task="lbtest/alpha", trial=1, lr=1e-2, test_top1=0.70)
    tl.write(tmp_path, task="lbtest/alpha", trial=0, lr=1e-3, seed=1, test_top1=0.10)  # stale
    tl.write(tmp_path, task="lbtest/beta", trial=0, lr=1e-3, test_top1=0.60)
    md = lb.render_markdown(lb.aggregate(tmp_path), **tl.REG)
    lora = tl.by_method(tl.table(md, "lbtest"))["lora"]
    assert lora["alpha"] == "70.0" and lora["mean"] == "65.00"  # the stale 10 % is left out
    assert lora["selected lr"] == "1e-03–1e-02 ⚑2"
    assert "Selections on an edge of the search grid: 2 of 2 (⚑)." in md
    assert "1 final row(s) do not retrain the trial their task's search rows select" in md


def test_an_unsettled_search_makes_its_finals_stale_in_the_table(tmp_path):
    import report_rows as tl

    from pebench.report import leaderboard as lb

    for task in ("lbtest/alpha", "lbtest/beta"):
        tl.write(tmp_path, task=task, phase="search", trial=0, lr=1e-3, val_top1=0.5)
        tl.write(tmp_path, task=task, phase="search", trial=1, lr=1e-2, status="oom",
                 val_top1=math.nan, error="killed")  # fmt: skip
        tl.write(tmp_path, task=task, trial=0, lr=1e-3, test_top1=0.6)  # run on a partial grid
    md = lb.render_markdown(lb.aggregate(tmp_path), **tl.REG)
    assert "No finished final run yet." in md
    assert "2 final row(s) do not retrain the trial" in md


# ---------------------------------------------------------------- a concurrent sweep's rows --
class CountingLocal(LocalExecutor):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.submitted: list[str] = []

    def submit(self, items):
        self.submitted += [s.run_id for s, _, _ in items]
        return super().submit(items)


@pytest.mark.slow
def test_a_failure_another_sweep_just_recorded_is_not_run_again(tmp_path):
    """Two drivers on one folder: the second used to re-execute the first one's fresh failures
    (3 of 4 in the attack; for a ``timeout`` row, hours of work). The other driver's failure is
    its first attempt: it is not run again as this driver's first, only retried once, as the
    second of ``TRIAL_ATTEMPTS`` in all (issue 27, item 5)."""
    from pebench.sweep.dispatch import Dispatcher

    sweep = _sweep(tmp_path, method="linear")
    task = sweep.tasks[0]
    trials = sweep.search_specs(task)
    old = dict(trials[0].base_row, status="timeout", error="run exceeded 300 s and was killed")
    RunStore(tmp_path).record(old)  # before this dispatch: a resume runs it again
    os.utime(RunStore(tmp_path).row_path(old["run_id"]), (time.time() - 60, time.time() - 60))
    with CountingLocal(max_parallel=1) as ex:
        d = Dispatcher([sweep], ex)
        # another driver's row comes later than this start; a file's mtime is the kernel's coarse
        # clock (up to a tick, 4-10 ms, behind time.time()), so a write within that tick of the
        # start looked older than it (the test failed about 1 time in 5 full-suite runs)
        time.sleep(0.05)
        fresh = dict(trials[1].base_row, status="timeout", error="run exceeded 300 s")
        RunStore(tmp_path).record(fresh)  # written by another driver while this one runs
        rows = d.run(progress=False)
    assert ex.submitted.count(trials[0].run_id) == 1  # recorded before: this dispatch runs it
    assert ex.submitted.count(trials[1].run_id) == 1  # the retry, not a first execution
    assert rows[1]["status"] == "ok" and rows[1]["attempt"] == 2 and rows[0]["attempt"] == 2
