"""20+ random SIGKILLs of a sweep's whole process group, each followed by a rerun of the same
command: the rerun still ends with 0 lost, 0 duplicated, 0 corrupt rows and nothing left over,
and every row with its record (per-image predictions) as one unit: 0 mismatched, 0 orphaned.

Every ``pebench run`` starts in its own session; at a seeded random time spread over an
uninterrupted sweep's duration its process group (driver, forkserver, run children) gets SIGKILL.
The next invocation resumes the same folder. When an invocation finishes before its kill, that
folder is complete and the next kill starts a fresh one. After the last kill, one uninterrupted
rerun. Every folder then holds exactly the run ids of an uninterrupted sweep, each in one valid
file with the same values (CPU runs are deterministic), and no marker or temp file.
"""

import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pebench import results as R
from pebench.record import RecordError
from pebench.store import RunStore, read_row_file

SWEEP = ["run", "--method", "linear,lora", "--tasks", "demo/shapes,demo/count", "--budget",
         "demo-smoke", "--quiet"]  # fmt: skip
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
#: kills per attack: 10 in CI (a minute); the issue's figure comes from PEBENCH_TEST_KILLS=24
KILLS = int(os.environ.get("PEBENCH_TEST_KILLS", "10"))
SEED = 16
VALUES = ("phase", "trial", "lr", "weight_decay", "seed", "val_top1", "test_top1", "status",
          "n_test", "n_test_correct", "n_val", "n_val_correct")  # fmt: skip
#: what a finished folder never holds (markers, temp files, takeover locks, DDP specs)
LEFTOVER = (".running", ".tmp", ".takeover", ".ddp")


def _start(results: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pebench.cli", *SWEEP, "--results", str(results)]
    with open(log, "ab") as err:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=ENV,
                                start_new_session=True)  # fmt: skip


def _group_gone(pgid: int, within: float = 10.0) -> bool:
    """Whether every process of group ``pgid`` has exited (within ``within`` seconds)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _running(results: Path, pid: int) -> bool:
    """Whether a run of the invocation ``pid`` is in progress (its marker names that worker)."""
    for path in results.glob("runs/*.running"):
        try:
            if json.loads(path.read_text())["pid"] == pid:
                return True
        except (OSError, ValueError, KeyError):
            continue
    return False


def _values(row, store):
    """The row's values and its record's predictions (CPU runs are deterministic)."""
    values = tuple(
        "nan" if isinstance(row[k], float) and math.isnan(row[k]) else row[k] for k in VALUES
    )
    record = store.load_record(row)
    return (*values, None if record is None else (record.split, record.pred, record.correct))


def _audit(results: Path, reference: dict[str, tuple]) -> dict[str, list]:
    """What is wrong in ``results`` compared with the uninterrupted sweep's rows."""
    runs = results / "runs"
    files = sorted(runs.rglob("*.csv"))  # rglob: finals moved to runs/stale/ count as extra
    ids = [p.stem for p in files]
    problems: dict[str, list] = {k: [] for k in ("lost", "duplicated", "corrupt", "different")}
    problems["lost"] = sorted(set(reference) - set(ids))
    problems["duplicated"] = sorted(
        str(p.relative_to(runs)) for p in files if p.parent != runs or p.stem not in reference
    )
    for path in files:
        try:
            row = read_row_file(path)
            values = _values(row, RunStore(results))
        except (R.ResultsError, RecordError) as err:  # a record not the row's: mismatched
            problems["corrupt"].append(str(err))
            continue
        if row["status"] == "ok" and values[-1] is None:
            problems["lost"].append(f"{path.stem}: an ok row without its record")
        if path.stem in reference and values != reference[path.stem]:
            problems["different"].append((path.stem, values[:-1], reference[path.stem][:-1]))
    problems["orphaned"] = sorted(
        p.name
        for p in runs.rglob("*.record.json")
        if not p.with_name(p.name.replace(".record.json", ".csv")).exists()
    )
    problems["leftover"] = sorted(
        str(p.relative_to(results))
        for p in results.rglob("*")
        if p.name.endswith(LEFTOVER) or (p.parent == runs and p.is_file() and not p.stat().st_size)
    )
    return problems


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted sweep: its folder, its duration and its rows' values by run id."""
    results = tmp_path_factory.mktemp("reference")
    t0 = time.monotonic()
    proc = _start(results, results.parent / "reference.log")
    assert proc.wait(timeout=600) == 0, (results.parent / "reference.log").read_text()
    took = time.monotonic() - t0
    store = RunStore(results)
    rows = {r["run_id"]: _values(r, store) for r in store.rows()}
    status = VALUES.index("status")
    assert len(rows) == 16 and all(v[status] == "ok" for v in rows.values())
    return results, took, rows


@pytest.mark.slow
def test_random_sigkills_of_a_sweep_lose_duplicate_and_corrupt_nothing(tmp_path, reference):
    _, took, expected = reference
    rng = random.Random(SEED)
    folders = [tmp_path / "f0"]
    kills, in_run, survivors, t0 = 0, 0, 0, time.monotonic()
    while kills < KILLS:
        log = tmp_path / f"{folders[-1].name}.log"
        proc = _start(folders[-1], log)
        try:
            rc = proc.wait(timeout=rng.uniform(0.0, took))
        except subprocess.TimeoutExpired:
            in_run += _running(folders[-1], proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            survivors += not _group_gone(proc.pid)
            continue
        assert rc == 0, log.read_text()  # finished before its kill: this folder is complete
        folders.append(tmp_path / f"f{len(folders)}")
    log = tmp_path / f"{folders[-1].name}.log"
    assert _start(folders[-1], log).wait(timeout=600) == 0, log.read_text()  # the final rerun
    took_all = time.monotonic() - t0
    audits = {f.name: _audit(f, expected) for f in folders}
    figures = {k: sum(len(a[k]) for a in audits.values()) for k in next(iter(audits.values()))}
    print(
        f"\nkill attack: {kills} SIGKILLs of the process group ({in_run} with runs in progress) "
        f"over {len(folders)} folder(s) in {took_all:.0f} s (uninterrupted sweep {took:.1f} s); "
        f"lost {figures['lost']}, "
        f"duplicated {figures['duplicated']}, corrupt {figures['corrupt']}, different "
        f"{figures['different']}, orphaned records {figures['orphaned']}, leftover files "
        f"{figures['leftover']}, process groups alive "
        f"after a kill {survivors}"
    )
    assert kills >= KILLS and survivors == 0
    assert all(not any(a.values()) for a in audits.values()), audits


@pytest.mark.slow
def test_a_resume_removes_what_a_killed_worker_left_next_to_its_rows(tmp_path, reference):
    """The marker of a run whose row was written (worker killed before removing it) and temp
    files of dead writers: no resume used to remove them."""

    source, _, expected = reference
    results = tmp_path / "r"
    shutil.copytree(source, results)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    rid = sorted(expected)[0]
    marker = dict(host=socket.gethostname(), pid=dead.pid, started_at=time.time(), timeout_s=60)
    RunStore(results).marker_path(rid).write_text(json.dumps(marker))
    runs = results / "runs"
    (runs / f".{rid}.csv.{dead.pid}@{socket.gethostname()}.abcdefgh.tmp").write_bytes(b"")
    old = runs / f".{rid}.running.k3j4l5m6.tmp"  # zero-byte, unowned, a minute old
    old.write_bytes(b"")
    os.utime(old, (time.time() - 60, time.time() - 60))
    log = tmp_path / "resume.log"
    assert _start(results, log).wait(timeout=600) == 0, log.read_text()
    assert not any(_audit(results, expected).values()), _audit(results, expected)
