"""One run in one process: the worker side of a sweep (light: no torch import here).

:func:`run_one` is what every executor's worker calls: it claims the run's ``.running`` marker,
starts a ``forkserver`` child (pebench preloaded) that executes the run and writes its row
atomically, and turns a timeout, a SIGKILL or a crash without a row into a row with that status.
The child exits when its worker dies, so no orphan ever writes a row. Unpickling a
:class:`RunSpec` imports only this module, so an engine job (a Slurm task, a Ray worker) pays the
torch import once, in the forkserver.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pebench import results as R


@dataclass(frozen=True)
class RunSpec:
    """Everything a child process needs to execute one run (plain data, picklable)."""

    method: str
    preset: str
    overrides: tuple[tuple[str, Any], ...]
    backbone: str
    weights: str | None
    task: str
    budget: str
    seed: int
    phase: str
    trial: int
    lr: float
    weight_decay: float
    data_dir: str | None = None
    device: str = "auto"
    threads: int | None = None
    progress: bool = False
    base_row: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    #: environment of the child, set before anything runs (e.g. ``CUDA_VISIBLE_DEVICES``)
    env: tuple[tuple[str, str], ...] = ()
    #: processes of one run: > 1 launches ``torchrun`` with DDP (:mod:`pebench.ddp`)
    nproc: int = 1
    #: DataLoader worker processes for per-example datasets (video decoding); speed only
    data_workers: int = 0


def classify(err: BaseException) -> str:
    """Map an exception to a row status."""
    from pebench.train import Diverged

    if isinstance(err, Diverged):
        return "diverged"
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return "oom"
    return "failed"


def _die_with_parent() -> None:
    """Exit this child as soon as the process that started it is gone (no orphan ever writes).

    A forkserver child's parent sentinel is its connection to the process that asked for it, so
    it becomes readable when that worker dies (killed job, lost node), even though the forkserver
    is the child's OS parent.
    """
    from multiprocessing.connection import wait

    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(70)

    threading.Thread(target=watch, name="pebench-parent-watch", daemon=True).start()


def _child(spec: RunSpec, results_dir: str) -> None:
    _die_with_parent()
    os.environ.update(dict(spec.env))  # e.g. CUDA_VISIBLE_DEVICES, before CUDA is initialised
    from pebench.runner import execute  # preloaded in the forkserver

    try:
        row = execute(spec)
    except BaseException as err:  # recorded, never lost
        error = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=4)}"
        row = dict(spec.base_row, status=classify(err), error=error[-2000:])
    R.write_row(results_dir, row)


# --------------------------------------------------------------------------- running markers --
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


def _marker_text(spec: RunSpec, timeout_s: float, child: int | None) -> str:
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


def _claim(results_dir: str | Path, spec: RunSpec, timeout_s: float) -> dict[str, Any] | None:
    """Create the run's marker exclusively; returns another live worker's marker instead.

    The marker appears complete or not at all (written aside, then hard-linked, which fails if
    it exists). A stale marker, or one of this process, is replaced.
    """
    path = marker_path(results_dir, spec.base_row["run_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(_marker_text(spec, timeout_s, None), encoding="utf-8")
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


# ----------------------------------------------------------------------------------- worker --
def _context() -> mp.context.BaseContext:
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["pebench.runner", "pebench.train", "pebench.metrics"])
    return ctx


class _Torchrun:
    """A DDP run: ``torchrun`` with ``spec.nproc`` processes; rank 0 writes the row.

    Shaped like a ``Process`` for :func:`run_one` (start, pid, join, is_alive, kill, exitcode).
    The processes get their own session, so a timeout kills the whole group.
    """

    def __init__(self, spec: RunSpec, results_dir: str | Path) -> None:
        self.spec, self.results_dir = spec, Path(results_dir)
        self.path = self.results_dir / "runs" / f".{spec.base_row['run_id']}.ddp.json"
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        from pebench.ddp import launch_command, write_spec

        write_spec(self.spec, self.path)
        cmd = launch_command(self.path, self.results_dir, self.spec.nproc)
        env = {**os.environ, **dict(self.spec.env)}
        self.popen = subprocess.Popen(cmd, env=env, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid if self.popen else 0

    def join(self, timeout: float | None = None) -> None:
        if self.popen is None:
            return
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return
        self.path.unlink(missing_ok=True)

    def is_alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        if self.is_alive():
            os.killpg(self.popen.pid, signal.SIGKILL)

    @property
    def exitcode(self) -> int | None:
        return self.popen.returncode if self.popen else None


def run_one(spec: RunSpec, results_dir: str | Path, timeout_s: float) -> dict[str, Any]:
    """Execute ``spec`` in a child process (unless finished) and return its row.

    While the child runs, ``runs/<run_id>.running`` names this worker (see :func:`read_marker`).
    The child exits if this process dies, so a killed worker never leaves a writer behind, and a
    worker finding a live marker of another worker waits for it instead of running the run twice.
    """
    rid = spec.base_row["run_id"]
    if (done := R.finished(results_dir, rid)) is not None:
        return done
    while _claim(results_dir, spec, timeout_s) is not None:  # another worker runs it: wait
        time.sleep(CLAIM_POLL_S)
    if spec.nproc > 1:
        proc: Any = _Torchrun(spec, results_dir)
    else:
        # not a daemon: a run may start DataLoader workers (video decoding); the child still
        # dies with this worker (_die_with_parent) and is killed below on timeout
        proc = _context().Process(target=_child, args=(spec, str(results_dir)), daemon=False)
    timed_out = False
    try:
        if (done := R.finished(results_dir, rid)) is not None:  # the other worker finished it
            return done
        R.run_path(results_dir, rid).unlink(missing_ok=True)  # an old failed row is redone
        proc.start()
        R.atomic_write_text(marker_path(results_dir, rid), _marker_text(spec, timeout_s, proc.pid))
        proc.join(timeout_s)
        timed_out = proc.is_alive()
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        marker_path(results_dir, rid).unlink(missing_ok=True)
    path = R.run_path(results_dir, rid)
    if path.exists():
        return R.read_csv(path)[0]
    if timed_out:
        status, error = "timeout", f"run exceeded {timeout_s:.0f} s and was killed"
    elif proc.exitcode == -signal.SIGKILL:
        status, error = "oom", "child process was killed by SIGKILL (out of memory?)"
    else:
        status, error = "failed", f"child process exited with code {proc.exitcode} and no row"
    return R.read_csv(R.write_row(results_dir, dict(spec.base_row, status=status, error=error)))[0]


def record_lost(
    spec: RunSpec,
    results_dir: str | Path,
    reason: str,
    executor: str = "",
    job_id: str = "",
    log_path: str = "",
) -> dict[str, Any]:
    """The row of a run whose worker or job died before returning (recorded by the dispatcher).

    A row the worker managed to write wins; otherwise a ``failed`` row naming the executor, the
    job and its log is written (not a final status: a resubmitted sweep runs it again) and the
    marker removed.
    """
    rid = spec.base_row["run_id"]
    marker_path(results_dir, rid).unlink(missing_ok=True)
    if (done := R.finished(results_dir, rid)) is not None:
        return done
    row = dict(spec.base_row, status="failed", error=reason[-2000:])
    job = {"executor": executor, "job_id": job_id, "log_path": log_path}
    row.update({k: v for k, v in job.items() if v})
    return R.read_csv(R.write_row(results_dir, row))[0]


__all__ = [
    "CLAIM_POLL_S",
    "MARKER_GRACE_S",
    "RunSpec",
    "classify",
    "marker_is_live",
    "marker_path",
    "read_marker",
    "record_lost",
    "run_one",
]
