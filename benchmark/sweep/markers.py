"""Running markers: ``runs/<run_id>.running`` names the worker that executes a run.

A worker claims a run by creating its marker exclusively (:func:`claim`); another worker that
finds a live marker waits instead of running the run a second time, and a stale marker (its pid
dead on this host, or older than the run's timeout plus a grace) may be taken over.
"""

from __future__ import annotations

import json
import os
import socket
import threading
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


def marker_is_live(marker: dict[str, Any], now: float | None = None) -> bool:
    """Whether a marker may belong to a run still in progress.

    Stale: its worker pid is dead on this host, or it is older than the run's timeout plus
    :data:`MARKER_GRACE_S` (a worker on another host that vanished without cleaning up).
    """
    now = time.time() if now is None else now
    age = now - float(marker.get("started_at", 0))
    if age > float(marker.get("timeout_s", 0)) + MARKER_GRACE_S:
        return False
    if marker.get("host") == socket.gethostname():
        try:
            os.kill(int(marker["pid"]), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, KeyError, ValueError):
            return True
    return True


def marker_text(spec: RunSpec, timeout_s: float, child: int | None) -> str:
    """The JSON a marker holds: run id, job, host, worker pid, child pid, start, timeout."""
    info = {
        "run_id": spec.base_row["run_id"],
        "executor": spec.base_row.get("executor", ""),
        "job_id": spec.base_row.get("job_id", ""),
        "log_path": spec.base_row.get("log_path", ""),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "child_pid": child,
        "started_at": time.time(),
        "timeout_s": timeout_s,
    }
    return json.dumps(info)


def claim(results_dir: str | Path, spec: RunSpec, timeout_s: float) -> dict[str, Any] | None:
    """Create the run's marker exclusively; returns another live worker's marker instead.

    The marker appears complete or not at all (written aside, then hard-linked, which fails if
    it exists). A stale marker, or one of this process, is replaced.
    """
    path = marker_path(results_dir, spec.base_row["run_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(marker_text(spec, timeout_s, None), encoding="utf-8")
    try:
        os.link(tmp, path)
        return None
    except FileExistsError:
        other = read_marker(results_dir, spec.base_row["run_id"])
        mine = other is not None and (other.get("host"), other.get("pid")) == (
            socket.gethostname(),
            os.getpid(),
        )
        if other is not None and not mine and marker_is_live(other):
            return other
        os.replace(tmp, path)
        return None
    finally:
        tmp.unlink(missing_ok=True)


__all__ = [
    "CLAIM_POLL_S",
    "MARKER_GRACE_S",
    "claim",
    "marker_is_live",
    "marker_path",
    "marker_text",
    "read_marker",
]
