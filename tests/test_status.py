"""``pebench status``: done / running / failed / missing, per method and suite."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from sweeps import run_sweep

from pebench.cli import main
from pebench.run import RunOptions
from pebench.store import RunStore
from pebench.sweep.plan import plan_sweep
from pebench.sweep.status import summarize, sweep_states

SEL = ["--tasks", "demo/shapes", "--budget", "demo-smoke", "--weights", "random", "--seeds", "0,1"]
pytestmark = pytest.mark.slow
KW = dict(tasks="demo/shapes", budget="demo-smoke", weights="random", seeds=[0, 1])


def _status(results, capsys):
    argv = ["status", "--method", "linear,lora", *SEL, "--results", str(results), "--json"]
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _counts(summary):
    keys = ("done", "running", "failed", "missing")
    return {g["method"]: [g[k] for k in keys] for g in summary["groups"]}


def _marker(results, rid, **info):
    path = RunStore(results).marker_path(rid)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = dict(run_id=rid, executor="slurm", job_id="42", log_path="/logs/42.err", timeout_s=300)
    base |= dict(host=socket.gethostname(), pid=os.getpid(), started_at=time.time())
    path.write_text(json.dumps(base | info))


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """linear run to completion; lora's search timed out (placeholder finals)."""
    results = tmp_path_factory.mktemp("status")
    sweeps = [plan_sweep(m, results_dir=results, **KW) for m in ("linear", "lora")]
    before = summarize(sweep_states(sweeps))
    run_sweep(
        plan_sweep("linear", RunOptions(progress=False, threads=1), results_dir=results, **KW)
    )
    opts = RunOptions(progress=False, timeout_s=0.01)
    run_sweep(plan_sweep("lora", opts, results_dir=results, **KW))
    return results, before


def test_status_before_anything_ran_counts_every_run_missing(swept):
    _, before = swept
    assert _counts(before) == {"linear": [0, 0, 0, 4], "lora": [0, 0, 0, 4]}
    assert before["total"] == {"done": 0, "running": 0, "failed": 0, "missing": 8, "total": 8}
    assert before["complete"] is False and before["groups"][0]["suite"] == "demo"


def test_status_after_runs_done_and_failed(swept, capsys):
    results, _ = swept
    summary = _status(results, capsys)
    # lora: 2 timed-out trials (run twice each), 2 blocked placeholder finals: all failed
    assert _counts(summary) == {"linear": [4, 0, 0, 0], "lora": [0, 0, 4, 0]}
    failed = {(f["phase"], f["status"]) for f in summary["failed"]}
    assert failed == {("search", "timeout"), ("final", "blocked")}
    assert main(["status", "--method", "linear,lora", *SEL, "--results", str(results)]) == 0
    table = capsys.readouterr().out
    assert "linear" in table and "failed: lora demo/shapes search trial=0 seed=0 timeout" in table


def test_running_markers_live_and_stale(swept, capsys, tmp_path):
    results, _ = swept
    lora = plan_sweep("lora", results_dir=results, **KW)
    task = lora.tasks[0]
    s0, s1 = (s.base_row["run_id"] for s in lora.search_specs(task))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        _marker(results, s0)  # this process: alive -> running (its failed row is being redone)
        _marker(results, s1, pid=dead.pid)  # dead pid on this host -> stale, still failed
        summary = _status(results, capsys)
        assert _counts(summary)["lora"] == [0, 1, 3, 0]
        (running,) = summary["running"]
        assert (running["run_id"], running["job_id"], running["log_path"]) == (
            s0,
            "42",
            "/logs/42.err",
        )
        _marker(results, s0, host="elsewhere", pid=1, started_at=time.time() - 3600)
        assert _counts(_status(results, capsys))["lora"] == [0, 0, 4, 0]  # older than timeout
        _marker(results, s0, host="elsewhere", pid=1)  # another host, recent: trusted
        assert _counts(_status(results, capsys))["lora"] == [0, 1, 3, 0]
    finally:
        RunStore(results).marker_path(s0).unlink(missing_ok=True)
        RunStore(results).marker_path(s1).unlink(missing_ok=True)


def test_finals_are_missing_until_the_search_is_recorded(swept, capsys, tmp_path):
    results, _ = swept
    copy = tmp_path / "partial"
    (copy / "runs").mkdir(parents=True)
    linear = plan_sweep("linear", results_dir=results, **KW)
    s0, s1 = (s.base_row["run_id"] for s in linear.search_specs(linear.tasks[0]))
    for rid in (s0,):  # one search trial recorded, the other not: finals cannot be named yet
        for path in (RunStore(results).row_path(rid), RunStore(results).record_path(rid)):
            (copy / "runs" / path.name).write_bytes(path.read_bytes())  # the row and its record
    summary = _status(copy, capsys)
    assert _counts(summary)["linear"] == [1, 0, 0, 3]
    states = sweep_states([plan_sweep("linear", results_dir=copy, **KW)])
    assert [(s.phase, s.state, s.run_id == "") for s in states] == [
        ("search", "done", False),
        ("search", "missing", False),
        ("final", "missing", True),
        ("final", "missing", True),
    ]


def test_tasks_without_prepared_data_count_missing_and_name_the_command(tmp_path, capsys):
    """Status needs no data: a cache never prepared leaves its runs missing, one line says why."""
    empty = tmp_path / "empty"
    sel = ["--tasks", "vtab/cifar,vtab/dtd", "--budget", "vtab1k-smoke", "--seeds", "0,1"]
    argv = ["--method", "lora,linear", *sel, "--data-dir", str(empty)]
    results = ["--results", str(tmp_path / "results")]
    assert main(["status", *argv, *results]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2:5] == [
        f"{'lora':<20} {'vtab':<10}" + "".join(f"{n:>9}" for n in (0, 0, 0, 8, 8)),
        f"{'linear':<20} {'vtab':<10}" + "".join(f"{n:>9}" for n in (0, 0, 0, 8, 8)),
        f"{'all':<20} {'':<10}" + "".join(f"{n:>9}" for n in (0, 0, 0, 16, 16)),
    ]
    command = (
        f"pebench prepare vtab/cifar --source noah --data-dir <raw data folder> --cache-dir "
        f"{empty} --image-size 32 (other sources: tfds)"
    )
    assert lines[5:] == [
        "not prepared: 2 vtab tasks without prepared data, so their 16 runs count as missing (a "
        f"run id names the data it reads); for example task 'vtab/cifar': no prepared cache at "
        f"{empty}/vtab/cifar/32px (image size 32). Run: {command}"
    ]
    assert main(["status", *argv, *results, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [(u["task"], u["runs"]) for u in summary["unprepared"]] == [
        ("vtab/cifar", 8),
        ("vtab/dtd", 8),
    ]
    assert main(["run", *argv, *results]) == 2  # a run still refuses, naming the command
    assert capsys.readouterr().err.strip().endswith(command)
    assert not (tmp_path / "results").exists()
