"""Running markers: a marker file names the worker that executes a run (the protocol, on paths).

A worker claims a run by creating its marker exclusively (:func:`claim`); another worker that
finds a live marker waits instead of running the run a second time, and a stale marker (its pid
dead on this host, or older than the run's timeout plus a grace) may be taken over. What a killed
worker leaves behind (a marker next to the row it finished, a takeover lock it was holding) is
removed on resume (:func:`clear_stale`, :func:`remove_stale_locks`); a full disk raises
:class:`pebench.fsio.DiskFullError` and leaves no temp file. Where markers live is
:class:`pebench.store.RunStore`'s business: every function here takes the marker's path.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from pebench import fsio

#: a marker older than the run's timeout plus this grace is stale even on another host
MARKER_GRACE_S = 600.0
#: how often a worker checks a run that another worker holds
CLAIM_POLL_S = 2.0


def read_marker(path: Path) -> dict[str, Any] | None:
    """The marker at ``path`` (job id, host, pid, start time...), or ``None``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
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


def marker_text(row: dict[str, Any], timeout_s: float, child: int | None) -> str:
    """The JSON a marker holds: run id, job, host, worker pid and its start, child, timeout.

    Args:
        row: the run's base row (its ``run_id``, and the job fields an executor set).
        timeout_s: seconds the run may take.
        child: pid of the process executing the run, once started.
    """
    info = {
        "run_id": row["run_id"],
        "executor": row.get("executor", ""),
        "job_id": row.get("job_id", ""),
        "log_path": row.get("log_path", ""),
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


def claim(path: Path, text: str) -> dict[str, Any] | None:
    """Create the marker at ``path`` (holding ``text``) exclusively; else another worker's marker.

    The marker appears complete or not at all (written aside to a fresh private file named after
    this worker, then hard-linked, which fails if it exists). A stale marker, or one of this
    process, is taken over by exactly one worker (:func:`_take_over`); the others get the marker
    back and wait.

    Raises:
        DiskFullError: no space or quota left for the marker (no temp file is left behind).
    """
    tmp: Path | None = None
    try:
        tmp = fsio.write_temp(path, text.encode("utf-8"))
        os.link(tmp, path)
        return None
    except FileExistsError:
        if tmp is None:  # mkstemp out of names: not a marker of another worker
            raise
        other = read_marker(path)
        if other is None:  # gone (its worker just finished: ask again) or unreadable (stale)
            return None if path.exists() and _take_over(path, None, tmp) else {}
        mine = (other.get("host"), other.get("pid")) == (socket.gethostname(), os.getpid())
        if not mine and marker_is_live(other):
            return other
        return None if _take_over(path, other, tmp) else other
    except OSError as err:
        if fsio.is_full(err):
            raise fsio.DiskFullError(path, err.errno) from err
        raise
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def clear_stale(path: Path) -> bool:
    """Remove the marker at ``path`` if its worker is gone; ``True`` if this call removed it.

    A worker killed between writing the row and removing its marker leaves the marker of a
    finished run, which no worker would ever claim again. Removed under the takeover lock
    (:func:`_take_over`), so a marker another worker has just taken over is never removed.
    """
    if not path.exists():
        return False
    marker = read_marker(path)
    if marker is not None and marker_is_live(marker):
        return False
    return _take_over(path, marker, None)


def remove_stale_locks(folder: Path) -> list[Path]:
    """Remove the takeover locks of ``folder`` older than :data:`TAKEOVER_STALE_S`; returns them."""
    removed = []
    for lock in sorted(folder.glob("*.takeover")):
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
    "marker_text",
    "read_marker",
    "remove_stale_locks",
]
