"""Executors: the same sweep on local processes, submitit (local cluster) and a local Ray gives
the same rows; a killed job becomes a failure row and a resubmission completes the grid."""

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pebench import results as R
from pebench.cli import main
from pebench.run import RunOptions
from pebench.store import RunStore
from pebench.sweep.dispatch import dispatch
from pebench.sweep.executors import LocalExecutor, RayExecutor, SlurmExecutor
from pebench.sweep.plan import plan_sweep
from pebench.sweep.status import summarize, sweep_states

METHODS = ("linear", "lora")
SWEEP = dict(
    tasks="demo/shapes",
    budget="demo-smoke",
    weights="random",
    seeds=[0, 1],
    # identical float reductions whatever the executor's CPU request
    options=RunOptions(threads=1, progress=False),
)
METRICS = ("test_top1", "val_top1", "train_loss", "params_method", "params_head")


def _sweeps(results):
    return [plan_sweep(m, results_dir=results, **SWEEP) for m in METHODS]


def _identity(row):
    return {k: row[k] for k in ("run_id", *R.IDENTITY, "suite", "method_config")}


def _same_numbers(a, b):
    return all(
        a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k]))
        for k in METRICS
    )


class RecordingLocal(LocalExecutor):
    """The real local executor, noting which rows were recorded when each batch was submitted."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.recorded: list[str] = []
        self.batches: list[tuple[list[str], set[str]]] = []

    def submit(self, items):
        self.batches.append(([s.base_row["run_id"] for s, _, _ in items], set(self.recorded)))
        return super().submit(items)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    results = tmp_path_factory.mktemp("local")
    with RecordingLocal(max_parallel=2) as ex:
        rows = dispatch(_sweeps(results), ex, on_row=lambda r: ex.recorded.append(r["run_id"]))
    return results, rows, ex


@pytest.mark.slow
def test_local_rows_and_per_task_pipelining(local):
    results, rows, ex = local
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
    assert [(r["method"], r["phase"]) for r in rows] == [
        (m, p) for m in METHODS for p in ("search", "search", "final", "final")
    ]
    assert {(r["executor"], r["job_id"]) for r in rows} == {("local", "")}
    for r in rows:  # every local run writes its own log next to the rows
        assert r["log_path"] == str(results / "logs" / f"{r['run_id']}.log")
        assert "done: ok" in Path(r["log_path"]).read_text()
    assert not list((results / "runs").glob("*.running"))
    first, *finals = ex.batches
    assert sorted(first[0]) == sorted(r["run_id"] for r in rows if r["phase"] == "search")
    for ids, before in finals:  # a task's finals wait for its own search rows, and only those
        (method,) = {r["method"] for r in rows if r["run_id"] in ids}
        search = {r["run_id"] for r in rows if r["method"] == method and r["phase"] == "search"}
        assert search <= before
    assert len(finals) == 2


@pytest.mark.slow
def test_a_run_two_sweeps_share_is_submitted_once(tmp_path):
    kw = dict(SWEEP, seeds=[0])
    twice = [plan_sweep("linear", results_dir=tmp_path, **kw) for _ in range(2)]
    with RecordingLocal(max_parallel=2) as ex:
        rows = dispatch(twice, ex)
    submitted = [rid for ids, _ in ex.batches for rid in ids]
    assert len(submitted) == len(set(submitted)) == 3
    assert rows[:3] == rows[3:] and sorted(submitted) == sorted(r["run_id"] for r in rows[:3])


@pytest.fixture(scope="module")
def ray_rows(tmp_path_factory):
    pytest.importorskip("ray")
    results = tmp_path_factory.mktemp("ray")
    with RayExecutor(cpus_per_run=1, num_cpus=2) as ex:
        rows = dispatch(_sweeps(results), ex)
    return results, rows


@pytest.mark.slow
def test_ray_gives_the_same_rows_as_local(local, ray_rows):
    _, want, _ = local
    results, got = ray_rows
    assert [_identity(r) for r in got] == [_identity(r) for r in want]
    assert all(_same_numbers(a, b) for a, b in zip(got, want, strict=True))
    assert {r["executor"] for r in got} == {"ray"}
    assert len({r["job_id"] for r in got}) == 8 and all(os.path.exists(r["log_path"]) for r in got)
    assert sorted(p.name for p in (results / "runs").iterdir()) == sorted(
        f"{r['run_id']}{suffix}" for r in got for suffix in (".csv", ".record.json")
    )


@pytest.fixture(scope="module")
def killed(tmp_path_factory, local):
    """A submitit sweep whose first final job is SIGKILLed mid-run, then resubmitted."""
    pytest.importorskip("submitit")
    _, want, _ = local
    finals = {r["run_id"] for r in want if r["phase"] == "final"}
    results, logs = tmp_path_factory.mktemp("slurm"), tmp_path_factory.mktemp("logs")
    victim: dict = {}

    def kill_first_final():
        while not victim.get("stop"):
            for path in (results / "runs").glob("*.running"):
                marker = RunStore(results).marker(path.stem)
                if marker and marker["run_id"] in finals and marker["child_pid"]:
                    os.kill(marker["pid"], signal.SIGKILL)  # the job's worker process
                    victim.update(marker)
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_first_final, daemon=True)
    killer.start()
    with SlurmExecutor(logs, cluster="local", cpus_per_job=1, poll_s=0.2) as ex:
        first = dispatch(_sweeps(results), ex)
    victim["stop"] = True
    time.sleep(1.0)  # an orphaned run child would write its row now: it must not exist
    snapshot = {p.name: p.read_bytes() for p in (results / "runs").glob("*.csv")}
    victim["status_between"] = summarize(sweep_states(_sweeps(results)))["total"]
    with SlurmExecutor(logs, cluster="local", cpus_per_job=1, poll_s=0.2) as ex:
        second = dispatch(_sweeps(results), ex)
    victim["status_after"] = summarize(sweep_states(_sweeps(results)))["total"]
    return results, victim, first, snapshot, second


@pytest.mark.slow
def test_killed_job_is_a_failure_row_with_job_id_and_log(killed):
    _, victim, first, snapshot, _ = killed
    assert victim, "no final run was killed"
    (row,) = [r for r in first if r["run_id"] == victim["run_id"]]
    assert row["status"] == "failed" and row["executor"] == "slurm"
    assert row["job_id"] == victim["job_id"] != "" and row["log_path"].endswith("_log.err")
    assert f"slurm job {row['job_id']} ended without a row" in row["error"]
    assert b",failed," in snapshot[f"{victim['run_id']}.csv"]  # the parent's row, no orphan's
    assert [r["status"] for r in first].count("ok") == 7
    assert victim["status_between"] == dict(done=7, running=0, failed=1, missing=0, total=8)


@pytest.mark.slow
def test_resubmitted_sweep_completes_without_loss_or_duplicates(killed, local):
    results, victim, first, snapshot, second = killed
    _, want, _ = local
    files = sorted(p.name for p in (results / "runs").iterdir())
    # each run once with its record, no marker left, no orphan record of the killed run
    assert files == sorted(f"{r['run_id']}{s}" for r in want for s in (".csv", ".record.json"))
    assert all(r["status"] == "ok" for r in second)
    assert victim["status_after"] == dict(done=8, running=0, failed=0, missing=0, total=8)
    for name, data in snapshot.items():  # rows finished before the kill were not rewritten
        if name != f"{victim['run_id']}.csv":
            assert (results / "runs" / name).read_bytes() == data
    (redone,) = [r for r in second if r["run_id"] == victim["run_id"]]
    assert redone["job_id"] not in ("", victim["job_id"])


@pytest.mark.slow
def test_submitit_gives_the_same_rows_as_local(killed, local):
    _, _, _, _, got = killed
    _, want, _ = local
    assert [_identity(r) for r in got] == [_identity(r) for r in want]
    assert all(_same_numbers(a, b) for a, b in zip(got, want, strict=True))
    assert {r["executor"] for r in got} == {"slurm"} and all(r["job_id"] for r in got)


@pytest.mark.parametrize(("executor", "module"), [("slurm", "submitit"), ("ray", "ray")])
def test_missing_engine_gives_the_install_hint(tmp_path, executor, module):
    code = (
        f"import sys; sys.modules[{module!r}] = None; from pebench.cli import main; "
        f"sys.exit(main(['run', '--method', 'linear', '--executor', {executor!r}, "
        f"'--results', {str(tmp_path / 'res')!r}]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert f"--executor {executor} needs the {module!r} package" in out.stderr
    assert "pip install 'pebench[cluster]'" in out.stderr
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--partition", "gpu"], "--partition applies to --executor slurm only, not local"),
        (["--executor", "slurm", "--ray-address", "auto"], "--ray-address applies to"),
        (["--max-parallel", "0"], "--max-parallel must be >= 1, got 0"),
        (["--executor", "slurm", "--time-min", "0"], "--time-min must be >= 1"),
        (["--executor", "ray", "--cpus-per-run", "0"], "--cpus-per-run must be > 0"),
        (["--executor", "ray", "--gpus-per-run", "-1"], "--gpus-per-run must be >= 0"),
        (
            ["--executor", "ray", "--gpus-per-run", "1", "--device", "cpu"],
            "--device cpu cannot be combined with a GPU request",
        ),
        (
            ["--executor", "ray", "--ray-address", "auto", "--max-parallel", "2"],
            "with --ray-address the cluster's resources",
        ),
    ],
)
def test_bad_executor_options_exit_2_before_anything_runs(tmp_path, capsys, extra, message):
    results = tmp_path / "results"
    code = main(["run", "--method", "linear", "--results", str(results), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("pebench: error:") and message in err, err
    assert not results.exists()


def test_unknown_executor_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--method", "linear", "--executor", "kubernetes"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'kubernetes'" in capsys.readouterr().err
