"""Running markers: ``runs/<run_id>.running`` names the worker that executes a run.

A worker claims a run by creating its marker exclusively (:func:`claim`); another worker that
finds a live marker waits instead of running the run a second time, and a stale marker (its pid
dead on this host, or older than the run's timeout plus a grace) may be taken over. What a killed
worker leaves behind (a marker next to the row it finished, a temp file or a takeover lock it was
writing) is removed on resume (:func:`clear_stale`, :func:`remove_leftovers`); a full disk raises
:class:`pebench.results.DiskFullError` and leaves no temp file.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from pebench import results as R
from pebench.run import RunSpec

#: a marker older than the run's timeout plus this grace is stale even on another host
MARKER_GRACE_S = 600.0
#: how often a worker checks a run that another worker holds
CLAIM_POLL_S = 2.0


def marker_path(results_dir: str | Path, rid: str) -> Path:
    """``<results>/runs/<run_id>.running``: exists while a worker executes run ``rid``."""
    return Path(results_dir) / "runs" / f"{rid}.running"


def read_marker(results_dir: str | Path, rid: str) -> dict[str, Any] | None:
    """The marker of run ``rid`` (job id, host, pid, start time...), or ``None``."""
    try:
        return json.loads(marker_path(results_dir, rid).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, ``/proc``), ``None`` if unknown.

    A pid can be recycled: a marker names its worker by pid *and* start time, so a new process
    that got the same pid does not keep a dead worker's run blocked.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the name in (...) may hold spaces


def marker_is_live(marker: dict[str, Any], now: float | None = None) -> bool:
    """Whether a marker may belong to a run still in progress.

    Stale: its worker pid is dead on this host (or was recycled: another process start time),
    or it is older than the run's timeout plus :data:`MARKER_GRACE_S` (a worker on another host
    that vanished without cleaning up).
    """
    now = time.time() if now is None else now
    age = now - float(marker.get("started_at", 0))
    if age > float(marker.get("timeout_s", 0)) + MARKER_GRACE_S:
        return False
    if marker.get("host") == socket.gethostname():
        try:
            pid = int(marker["pid"])
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except (PermissionError, KeyError, ValueError, TypeError):
            return True
        started = marker.get("pid_start")
        return started is None or _start_time(pid) in (None, started)
    return True


def marker_text(spec: RunSpec, timeout_s: float, child: int | None) -> str:
    """The JSON a marker holds: run id, job, host, worker pid and its start, child, timeout."""
    info = {
        "run_id": spec.base_row["run_id"],
        "executor": spec.base_row.get("executor", ""),
        "job_id": spec.base_row.get("job_id", ""),
        "log_path": spec.base_row.get("log_path", ""),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start": _start_time(os.getpid()),
        "child_pid": child,
        "started_at": time.time(),
        "timeout_s": timeout_s,
    }
    return json.dumps(info)


#: a takeover lock older than this belongs to a worker that died while holding it
TAKEOVER_STALE_S = 30.0


def _take_over(path: Path, stale: dict[str, Any] | None, tmp: Path | None) -> bool:
    """Replace the stale marker ``stale`` at ``path`` by ``tmp``; ``False`` if another won.

    Only the worker that creates ``<marker>.takeover`` (``mkdir``: atomic, also on NFS) may
    replace the marker, and only while it still holds the same stale content (``None``: an
    unreadable one): of two workers that both saw it stale, the second finds the first one's
    live marker and backs off. ``tmp=None`` removes the stale marker instead.
    """
    lock = path.with_name(path.name + ".takeover")
    try:
        lock.mkdir()
    except FileExistsError:
        try:
            if time.time() - lock.stat().st_mtime > TAKEOVER_STALE_S:
                lock.rmdir()
        except OSError:
            pass
        return False
    try:
        current = None
        with contextlib.suppress(OSError, ValueError):
            current = json.loads(path.read_text(encoding="utf-8"))
        if current != stale:
            return False
        if tmp is None:
            path.unlink(missing_ok=True)
        else:
            os.replace(tmp, path)
        return True
    finally:
        lock.rmdir()


def claim(results_dir: str | Path, spec: RunSpec, timeout_s: float) -> dict[str, Any] | None:
    """Create the run's marker exclusively; returns another worker's marker instead.

    The marker appears complete or not at all (written aside to a fresh private file named after
    this worker, then hard-linked, which fails if it exists). A stale marker, or one of this
    process, is taken over by exactly one worker (:func:`_take_over`); the others get the marker
    back and wait.

    Raises:
        DiskFullError: no space or quota left for the marker (no temp file is left behind).
    """
    path = marker_path(results_dir, spec.base_row["run_id"])
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            prefix=R.temp_prefix(path), suffix=R.TEMP_SUFFIX, dir=path.parent
        )
        tmp = Path(name)
        try:
            R.write_all(fd, marker_text(spec, timeout_s, None).encode("utf-8"))
        finally:
            os.close(fd)
        os.link(tmp, path)
        return None
    except FileExistsError:
        if tmp is None:  # mkstemp out of names: not a marker of another worker
            raise
        other = read_marker(results_dir, spec.base_row["run_id"])
        if other is None:  # gone (its worker just finished: ask again) or unreadable (stale)
            return None if path.exists() and _take_over(path, None, tmp) else {}
        mine = (other.get("host"), other.get("pid")) == (socket.gethostname(), os.getpid())
        if not mine and marker_is_live(other):
            return other
        return None if _take_over(path, other, tmp) else other
    except OSError as err:
        if R.is_full(err):
            raise R.DiskFullError(path, err.errno) from err
        raise
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def clear_stale(results_dir: str | Path, rid: str) -> bool:
    """Remove run ``rid``'s marker if its worker is gone; ``True`` if this call removed it.

    A worker killed between writing the row and removing its marker leaves the marker of a
    finished run, which no worker would ever claim again. Removed under the takeover lock
    (:func:`_take_over`), so a marker another worker has just taken over is never removed.
    """
    path = marker_path(results_dir, rid)
    if not path.exists():
        return False
    marker = read_marker(results_dir, rid)
    if marker is not None and marker_is_live(marker):
        return False
    return _take_over(path, marker, None)


def remove_leftovers(results_dir: str | Path) -> list[Path]:
    """Remove what killed writers left in ``<results>/runs/``; returns the paths removed.

    Abandoned temp files of rows and markers (:func:`pebench.results.remove_stale_temps`: their
    writer is dead, or they are older than a takeover lock may live) and takeover locks older
    than :data:`TAKEOVER_STALE_S`. Writes in progress are left alone.
    """
    runs = Path(results_dir) / "runs"
    removed = R.remove_stale_temps(runs)
    for lock in sorted(runs.glob("*.running.takeover")):
        with contextlib.suppress(OSError):  # taken meanwhile, or released
            if time.time() - lock.stat().st_mtime > TAKEOVER_STALE_S:
                lock.rmdir()
                removed.append(lock)
    return removed


__all__ = [
    "CLAIM_POLL_S",
    "MARKER_GRACE_S",
    "TAKEOVER_STALE_S",
    "claim",
    "clear_stale",
    "marker_is_live",
    "marker_path",
    "marker_text",
    "read_marker",
    "remove_leftovers",
]
