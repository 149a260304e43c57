"""Running markers: ``runs/<run_id>.running`` names the worker that executes a run.

A worker claims a run by creating its marker exclusively (:func:`claim`); another worker that
finds a live marker waits instead of running the run a second time, and a stale marker (its pid
dead on this host, or older than the run's timeout plus a grace) may be taken over.
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


def _take_over(path: Path, stale: dict[str, Any] | None, tmp: Path) -> bool:
    """Replace the stale marker ``stale`` at ``path`` by ``tmp``; ``False`` if another won.

    Only the worker that creates ``<marker>.takeover`` (``mkdir``: atomic, also on NFS) may
    replace the marker, and only while it still holds the same stale content (``None``: an
    unreadable one): of two workers that both saw it stale, the second finds the first one's
    live marker and backs off.
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
        os.replace(tmp, path)
        return True
    finally:
        lock.rmdir()


def claim(results_dir: str | Path, spec: RunSpec, timeout_s: float) -> dict[str, Any] | None:
    """Create the run's marker exclusively; returns another worker's marker instead.

    The marker appears complete or not at all (written aside to a fresh private file, then
    hard-linked, which fails if it exists). A stale marker, or one of this process, is taken
    over by exactly one worker (:func:`_take_over`); the others get the marker back and wait.
    """
    path = marker_path(results_dir, spec.base_row["run_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(marker_text(spec, timeout_s, None))
        os.link(tmp, path)
        return None
    except FileExistsError:
        other = read_marker(results_dir, spec.base_row["run_id"])
        if other is None:  # gone (its worker just finished: ask again) or unreadable (stale)
            return None if path.exists() and _take_over(path, None, tmp) else {}
        mine = (other.get("host"), other.get("pid")) == (socket.gethostname(), os.getpid())
        if not mine and marker_is_live(other):
            return other
        return None if _take_over(path, other, tmp) else other
    finally:
        tmp.unlink(missing_ok=True)


__all__ = [
    "CLAIM_POLL_S",
    "MARKER_GRACE_S",
    "TAKEOVER_STALE_S",
    "claim",
    "marker_is_live",
    "marker_path",
    "marker_text",
    "read_marker",
]
