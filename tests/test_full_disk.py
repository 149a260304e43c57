"""A full results disk: one line and exit 2, no dispatch after it, no temp file, rows kept.

The attack on main crashed the driver with three chained ``OSError`` tracebacks, recorded runs
that only lacked room as ``failed`` and left zero-byte temp files. Faults are injected without
hooks in shipped code: a temp file whose descriptor is ``/dev/full`` (the kernel answers every
write with ``ENOSPC``), an ``os.write`` that answers ``EDQUOT``, a ``sitecustomize`` doing the
former in every process of a real ``pebench run``, and a real tmpfs of a few pages where a user
namespace allows mounting one.
"""

import errno
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pebench import fsio
from pebench import results as R
from pebench.errors import PebenchError
from pebench.run import RunSpec
from pebench.store import RunStore, read_row_file
from pebench.sweep import worker

RID = "0123456789abcdef"
#: the message of a full results folder (the N is checked against the folder)
FULL_LINE = re.compile(
    r"pebench: error: results folder (?P<dir>\S+) is full \(No space left on device\): "
    r"(?P<n>\d+) runs recorded, rerun the same command when there is space"
)
SWEEP = ["run", "--method", "linear", "--tasks", "demo/shapes", "--budget", "demo-smoke",
         "--quiet"]  # fmt: skip
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1")


def _row(**over):
    row = {c: "" for c in R.COLUMNS}
    row.update(run_id=RID, phase="search", trial=0, lr=0.01, weight_decay=0.0, seed=0,
               val_top1=0.5, status="ok", method_reconstruction=False, git_dirty=False)  # fmt: skip
    return {**row, **over}


def _dev_full(monkeypatch, folder):
    """Temp files created in ``folder`` exist but every write to them fails with ENOSPC."""
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        if Path(name).parent == Path(folder):
            full = os.open("/dev/full", os.O_WRONLY)
            os.dup2(full, fd)
            os.close(full)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def _over_quota(monkeypatch, folder):
    """Every ``os.write`` to a file in ``folder`` fails with EDQUOT."""
    real = os.write

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder)):
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


def _leftovers(folder):
    """Temp files, markers, takeover locks and zero-byte files anywhere under ``folder``."""
    bad = []
    for path in Path(folder).rglob("*"):
        name = path.name
        if name.endswith((".tmp", ".running", ".takeover", ".ddp")) or (
            path.is_file() and path.stat().st_size == 0
        ):
            bad.append(str(path.relative_to(folder)))
    return sorted(bad)


@pytest.mark.parametrize("fault", ["enospc", "edquot"])
def test_a_row_that_does_not_fit_is_one_line_and_the_old_row_stays(tmp_path, monkeypatch, fault):
    row = RunStore(tmp_path).record(_row(status="failed", val_top1=float("nan"), error="x"))
    path = RunStore(tmp_path).row_path(row["run_id"])
    before = path.read_bytes()
    (_dev_full if fault == "enospc" else _over_quota)(monkeypatch, path.parent)
    with pytest.raises(fsio.DiskFullError) as info:
        RunStore(tmp_path).record(_row())
    err = info.value
    assert isinstance(err, PebenchError) and isinstance(err, OSError)
    assert err.errno == (errno.ENOSPC if fault == "enospc" else errno.EDQUOT)
    reason = "No space left on device" if fault == "enospc" else "Disk quota exceeded"
    assert str(err) == (
        f"folder {path.parent} is full ({reason}): {path.name} was not written; rerun the same "
        "command when there is space"
    )
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file


def test_a_marker_that_does_not_fit_leaves_no_marker_and_no_temp_file(tmp_path, monkeypatch):
    spec = RunSpec({"run_id": RID, "executor": "local", "job_id": "", "log_path": ""})
    runs = tmp_path / "runs"
    runs.mkdir()
    _dev_full(monkeypatch, runs)
    with pytest.raises(fsio.DiskFullError, match=r"is full \(No space left on device\)"):
        RunStore(tmp_path).claim(spec.base_row, 60.0)
    assert list(runs.iterdir()) == []


def test_a_full_results_folder_is_not_the_runs_failure(tmp_path):
    """A run child whose log or row does not fit exits without a row (the rerun redoes it);
    an ENOSPC elsewhere (a full /tmp) stays the run's own failure."""
    nospace = OSError(errno.ENOSPC, "No space left on device")  # a write to an open log file
    assert worker.results_full(nospace, tmp_path) == errno.ENOSPC
    inside = OSError(errno.EDQUOT, "Disk quota exceeded", str(tmp_path / "logs" / "x.log"))
    assert worker.results_full(inside, tmp_path) == errno.EDQUOT
    elsewhere = OSError(errno.ENOSPC, "No space left on device", "/elsewhere/cache.bin")
    assert worker.results_full(elsewhere, tmp_path) is None
    try:
        try:
            raise nospace
        except OSError:
            raise RuntimeError("log close failed") from None
    except RuntimeError as chained:
        assert worker.results_full(chained, tmp_path) is None  # `from None`: not its cause
    try:
        try:
            raise nospace
        except OSError as err:
            raise RuntimeError("wrapped") from err
    except RuntimeError as wrapped:
        assert worker.results_full(wrapped, tmp_path) == errno.ENOSPC
    assert worker.results_full(ValueError("x"), tmp_path) is None


def test_a_worker_lost_to_a_full_folder_gets_no_failure_row(tmp_path):
    """Executors record a worker that raised as a ``failed`` row: for a full folder that row was
    a second ENOSPC traceback (or, when it fitted, a run wrongly marked failed)."""
    spec = RunSpec(_row())
    full = fsio.DiskFullError(RunStore(tmp_path).row_path(RID), errno.ENOSPC)
    try:
        raise full
    except fsio.DiskFullError as err:
        with pytest.raises(fsio.DiskFullError) as info:
            worker.record_lost(spec, tmp_path, f"local job ? ended without a row: {err}")
    assert info.value is full
    assert not RunStore(tmp_path).row_path(RID).exists()


# ------------------------------------------------------------------------------- end to end --
#: every temp file created in the runs folder once it holds ``after`` rows writes to /dev/full
SITE = """\
import os
import tempfile

_real = tempfile.mkstemp


def mkstemp(*args, **kwargs):
    fd, name = _real(*args, **kwargs)
    runs = {runs!r}
    if os.path.dirname(os.path.abspath(name)) == runs:
        if sum(n.endswith(".csv") for n in os.listdir(runs)) >= {after}:
            full = os.open("/dev/full", os.O_WRONLY)
            os.dup2(full, fd)
            os.close(full)
    return fd, name


tempfile.mkstemp = mkstemp
"""


def _pebench(results, env=ENV, timeout=300):
    cmd = [sys.executable, "-m", "pebench.cli", *SWEEP, "--results", str(results)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def _one_error_line(stderr):
    """The error line; the only one, the last one, and no traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("pebench: error:")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr
    return errors[0]


def _rows(runs):
    return {p.name: p.read_bytes() for p in sorted(Path(runs).glob("*.csv"))}


@pytest.mark.slow
def test_pebench_run_on_a_disk_that_fills_up_stops_in_one_line_and_resumes(tmp_path):
    """Full after the 2 search rows: the finals' markers do not fit. It used to end with three
    chained tracebacks (exit 1) after recording the finals as ``failed``."""
    results = tmp_path / "r"
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE.format(runs=str(results / "runs"), after=2))
    env = dict(ENV, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    out = _pebench(results, env)
    assert out.returncode == 2, out.stderr
    line = FULL_LINE.fullmatch(_one_error_line(out.stderr))
    assert line and line["dir"] == str(results) and line["n"] == "2", out.stderr
    kept = _rows(results / "runs")
    assert len(kept) == 2
    assert all(r["status"] == "ok" and r["phase"] == "search" for r in RunStore(results).rows())
    assert _leftovers(results) == []
    assert "final" not in out.stderr  # no run was dispatched after the disk filled up

    again = _pebench(results)  # there is space now
    assert again.returncode == 0, again.stderr
    rows = _rows(results / "runs")
    assert len(rows) == 4 and all(rows[name] == data for name, data in kept.items())
    assert all(r["status"] == "ok" for r in RunStore(results).rows())
    assert _leftovers(results) == []


def _unshare_works() -> bool:
    if shutil.which("unshare") is None or not Path("/dev/full").exists():
        return False
    try:
        probe = subprocess.run(["unshare", "-Urm", "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


#: inside a user + mount namespace: a tmpfs of a few pages, a sweep into it, then more room
TMPFS = """\
set -u
mount -t tmpfs -o size={size} tmpfs "$1"
cd {cwd}
run() {{ {python} -m pebench.cli {sweep} --results "$1/res" 2>"$2/err$3"; echo $? >"$2/rc$3"; }}
listing() {{
  (cd "$1/res" && find . -printf '%p %s\\n') >"$2/ls$3"; cp -r "$1/res/runs" "$2/runs$3"
}}
run "$1" "$2" 1; listing "$1" "$2" 1
mount -o remount,size=4m "$1"
run "$1" "$2" 2; listing "$1" "$2" 2
"""


@pytest.mark.slow
@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -Urm` (user namespaces)")
def test_pebench_run_into_a_real_tiny_tmpfs(tmp_path):
    """A real full filesystem: logs, markers and rows all compete for 9 pages."""
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    script = tmp_path / "tmpfs.sh"
    script.write_text(TMPFS.format(size="36k", cwd=Path(__file__).parents[1], python=sys.executable,
                                   sweep=" ".join(SWEEP)))  # fmt: skip
    subprocess.run(["unshare", "-Urm", "bash", str(script), str(mnt), str(out)], env=ENV,
                   check=True, timeout=600)  # fmt: skip
    stderr = (out / "err1").read_text()
    assert (out / "rc1").read_text().strip() == "2", stderr
    line = FULL_LINE.fullmatch(_one_error_line(stderr))
    assert line and line["dir"] == str(mnt / "res"), stderr
    listing = (out / "ls1").read_text()
    assert not re.search(r"\.(tmp|running|takeover) ", listing), listing
    assert not re.search(r"\.(csv|json|log) 0$", listing, re.M), listing  # no zero-byte file
    first = _rows(out / "runs1")  # the rows recorded before the disk filled up
    assert int(line["n"]) <= len(first) < 4
    assert all(read_row_file(out / "runs1" / name)["status"] == "ok" for name in first)

    assert (out / "rc2").read_text().strip() == "0", (out / "err2").read_text()
    second = _rows(out / "runs2")
    assert len(second) == 4 and all(second[name] == data for name, data in first.items())
    assert not re.search(r"\.(tmp|running|takeover) ", (out / "ls2").read_text())
