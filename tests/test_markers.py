"""Running markers under attack: simultaneous takeovers of a stale marker, recycled pids."""

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time

import pytest

from pebench import fsio
from pebench.markers import _start_time, marker_is_live
from pebench.run import RunSpec
from pebench.store import RunStore

RID = "0123456789abcdef"


def _spec():
    return RunSpec({"run_id": RID, "executor": "local", "job_id": "", "log_path": ""})


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _contender(results, barrier, owners):
    barrier.wait()
    if RunStore(results).claim(_spec().base_row, 60.0) is None:
        owners.put(os.getpid())
    # a worker holds its marker while its run goes on: one that exited at once left a marker
    # with a dead pid, which a slower contender then rightly took over (a flaky second owner)
    barrier.wait()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 3])
def test_exactly_one_worker_takes_over_a_stale_marker(tmp_path, workers):
    """The old claim let 26 of 100 such races end with two owners of one run."""
    ctx = mp.get_context("fork")
    dead = _dead_pid()
    doubles = 0
    for round_ in range(100):
        results = tmp_path / f"r{round_}"
        path = RunStore(results).marker_path(RID)
        path.parent.mkdir(parents=True)
        stale = dict(run_id=RID, host=socket.gethostname(), pid=dead, started_at=time.time(),
                     timeout_s=60)  # fmt: skip
        path.write_text(json.dumps(stale))
        barrier, owners = ctx.Barrier(workers), ctx.Queue()
        procs = [ctx.Process(target=_contender, args=(results, barrier, owners))
                 for _ in range(workers)]  # fmt: skip
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        got = []
        while not owners.empty():
            got.append(owners.get())
        doubles += len(got) > 1
        assert len(got) == 1, f"round {round_}: {len(got)} owners"
        assert RunStore(results).marker(RID)["pid"] == got[0]  # the owner's marker is the one left
        assert not list(path.parent.glob("*.tmp")) and not list(path.parent.glob("*.takeover"))
    assert doubles == 0


def test_a_recycled_pid_is_recognised_as_stale():
    me = os.getpid()
    live = dict(host=socket.gethostname(), pid=me, pid_start=_start_time(me),
                started_at=time.time(), timeout_s=60)  # fmt: skip
    assert marker_is_live(live)
    recycled = dict(live, pid_start="1")  # same pid, another process start: a new process
    assert not marker_is_live(recycled)
    assert marker_is_live(dict(live, pid_start=None))  # written where /proc is absent


def test_an_unreadable_marker_is_taken_over(tmp_path):
    path = RunStore(tmp_path).marker_path(RID)
    path.parent.mkdir(parents=True)
    path.write_text("{garbage")
    assert RunStore(tmp_path).claim(_spec().base_row, 60.0) is None
    assert RunStore(tmp_path).marker(RID)["pid"] == os.getpid()


def test_the_marker_temp_file_never_follows_a_planted_symlink(tmp_path):
    """The temp name used to be predictable: a symlink planted there redirected the write."""
    path = RunStore(tmp_path).marker_path(RID)
    path.parent.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    for name in (f".{path.name}.{os.getpid()}.0.tmp", f".{path.name}.tmp"):
        (path.parent / name).symlink_to(victim)
    assert RunStore(tmp_path).claim(_spec().base_row, 60.0) is None
    assert victim.read_text() == "keep"


def _temp(runs, target, pid, host=None, age=0.0, data=b""):
    """A temp file named as pebench names them (``.<target>.<pid>@<host>.<random>.tmp``)."""

    prefix = fsio.temp_prefix(runs / target).replace(f".{os.getpid()}@", f".{pid}@")
    if host is not None:
        prefix = prefix.rsplit("@", 1)[0] + f"@{host}."
    path = runs / f"{prefix}k3j4l5m6.tmp"
    path.write_bytes(data)
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_temp_files_of_killed_writers_are_removed_on_resume(tmp_path):
    """A writer killed between creating its temp file and renaming it used to leave it forever
    (zero-byte marker temps after a full disk; partial rows after a SIGKILL)."""

    runs = tmp_path / "runs"
    runs.mkdir()
    dead, me = _dead_pid(), os.getpid()
    gone = [
        _temp(runs, f"{RID}.running", dead),  # zero-byte: killed before writing
        _temp(runs, f"{RID}.csv", dead, data=b"run_id,pha"),  # partial row
        _temp(runs, f"{RID}.running", 1234, host="elsewhere", age=120),  # another host, old
        runs / f".{RID}.running.abcdefgh.tmp",  # an older pebench's name, old
    ]
    gone[-1].write_text("{garb")
    os.utime(gone[-1], (time.time() - 120, time.time() - 120))
    kept = [
        _temp(runs, f"{RID}.running", me),  # a write in progress in this process
        _temp(runs, f"{RID}.csv", 1234, host="elsewhere"),  # another host, just now
        runs / f".{RID}.csv.zyxwvuts.tmp",  # no writer named, just now
        runs / f"{RID}.csv",
        runs / f"{RID}.running",
    ]
    for path in kept[2:]:
        path.write_text("x")
    old_lock, new_lock = runs / "a.running.takeover", runs / "b.running.takeover"
    old_lock.mkdir()
    new_lock.mkdir()
    os.utime(old_lock, (time.time() - 120, time.time() - 120))
    removed = RunStore(tmp_path).tidy()
    assert sorted(removed) == sorted([*gone, old_lock])
    assert all(p.exists() for p in [*kept, new_lock]) and not any(p.exists() for p in gone)


def test_the_marker_a_killed_worker_left_next_to_its_row_is_removed(tmp_path):
    """A worker killed after its child wrote the row, before it removed the marker, left a
    `.running` file that no resume ever removed (the run is finished: nobody claims it)."""

    path = RunStore(tmp_path).marker_path(RID)
    path.parent.mkdir(parents=True)
    host = socket.gethostname()
    path.write_text(json.dumps(dict(host=host, pid=_dead_pid(), started_at=time.time(),
                                    timeout_s=60)))  # fmt: skip
    assert RunStore(tmp_path).clear_stale(RID) and not path.exists()
    assert not RunStore(tmp_path).clear_stale(RID)  # nothing left to remove
    path.write_text("")  # unreadable: stale
    assert RunStore(tmp_path).clear_stale(RID) and not path.exists()
    assert RunStore(tmp_path).claim(_spec().base_row, 60.0) is None  # live: this process
    assert (
        not RunStore(tmp_path).clear_stale(RID)
        and RunStore(tmp_path).marker(RID)["pid"] == os.getpid()
    )
    assert not list(path.parent.glob("*.takeover"))
