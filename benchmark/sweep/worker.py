"""One run in one process: the worker side of a sweep (light: no torch import here).

:func:`run_one` is what every executor's worker calls: it claims the run's ``.running`` marker,
starts a ``forkserver`` child (pebench preloaded) that executes the run and writes its row
atomically, and turns a timeout, a SIGKILL or a crash without a row into a row with that status.
The child exits when its worker dies, so no orphan ever writes a row. A full results folder is
not the run's failure: the run writes no row and its worker raises
:class:`pebench.fsio.DiskFullError`, which stops the sweep (the rerun redoes it). Unpickling a
:class:`RunSpec` imports only this module, so an engine job (a Slurm task, a Ray worker) pays the
torch import once, in the forkserver.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from pebench import fsio
from pebench import results as R
from pebench.markers import CLAIM_POLL_S
from pebench.run import ERROR_CHARS, RunSpec, classify, error_text
from pebench.stage import adopt_forkserver, context, die_with_parent, own_progress_lock
from pebench.store import RunStore, as_store

#: how often a worker waiting for its child looks at :data:`STOP`
STOP_POLL_S = 0.25


#: set by the driver when the user interrupts a sweep (Ctrl-C): every worker kills its child,
#: removes its marker and writes no row (the rerun runs those runs from the start)
STOP = threading.Event()


class RunInterrupted(Exception):
    """A run stopped because the sweep was interrupted; no row was written."""


#: exit status of a run child whose results folder was full (by ``errno``): it wrote no row
FULL_EXIT = {errno.ENOSPC: 74, errno.EDQUOT: 75}


def _inside(filename: object, folder: str | Path) -> bool:
    try:
        return Path(os.path.abspath(str(filename))).is_relative_to(os.path.abspath(folder))
    except (TypeError, ValueError):
        return False


def results_full(err: BaseException | None, results_dir: str | Path) -> int | None:
    """The ``errno`` if ``err`` (or an error it was raised from) is a full results folder.

    An ``ENOSPC``/``EDQUOT`` naming a file elsewhere (a full ``/tmp``) is the run's own failure;
    one naming no file (a write to an open log file) or a file in ``results_dir`` is the
    folder's.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and fsio.is_full(err):
            if err.filename is None or _inside(err.filename, results_dir):
                return err.errno
        suppressed = err.__suppress_context__  # `raise ... from None`: not what caused it
        err = err.__cause__ or (None if suppressed else err.__context__)
    return None


def _exit_full(code: int, spec: RunSpec, store: RunStore) -> NoReturn:
    """End a run child whose results folder is full: no row, no traceback, :data:`FULL_EXIT`."""
    store.drop_empty_logs(spec.base_row["run_id"])
    sys.exit(FULL_EXIT[code])


def _child(spec: RunSpec, results_dir: str) -> None:
    # Ctrl-C reaches the whole foreground process group; the driver decides what stops (it
    # kills this child without a row), so an interrupt never becomes a "failed" row here
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    own_progress_lock()  # it is killed on a timeout or a Ctrl-C: no semaphore to leak
    adopt_forkserver()  # the run's stages come from the worker's forkserver
    os.environ.update(
        dict(spec.options.env)
    )  # e.g. CUDA_VISIBLE_DEVICES, before CUDA is initialised
    from pebench.supervise import execute  # preloaded in the forkserver

    store = RunStore(results_dir)
    record = None
    try:
        row, record = execute(spec, store)
    except BaseException as err:  # recorded, never lost
        if (code := results_full(err, results_dir)) is not None:
            _exit_full(code, spec, store)
        row = dict(spec.base_row, status=classify(err), error=error_text(err))
    try:
        store.record(row, record)
    except fsio.DiskFullError as err:
        _exit_full(err.errno, spec, store)


# ----------------------------------------------------------------------------------- worker --
def start_forkserver() -> None:
    """Start the run processes' forkserver now, from the main thread, with SIGINT ignored.

    An ignored signal stays ignored across ``exec`` (and Python then installs no
    ``KeyboardInterrupt`` handler), so neither the forkserver (importing torch) nor any run
    child it forks sees the terminal's Ctrl-C: the driver alone decides what stops and how
    (:data:`STOP`). Without it, a Ctrl-C during the preload or in the instant between a fork and
    the child's own handler printed ``KeyboardInterrupt`` tracebacks.
    """
    ctx = context()
    if ctx.get_start_method() != "forkserver":
        return
    if threading.current_thread() is not threading.main_thread():
        return
    from multiprocessing import forkserver

    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, old)


def _current(store: RunStore, rid: str) -> dict[str, Any] | None:
    """Run ``rid``'s row, ``None`` when there is none or it cannot be read (then it is redone)."""
    try:
        return store.read(rid)
    except R.ResultsError:
        return None


def run_one(spec: RunSpec, results_dir: str | Path | RunStore, timeout_s: float) -> dict[str, Any]:
    """Execute ``spec`` in a child process (unless finished) and return its row.

    While the child runs, the run's marker names this worker (:meth:`RunStore.claim`). The child
    exits if this process dies, so a killed worker never leaves a writer behind, and a worker
    finding a live marker of another worker waits for it instead of running the run twice.

    Raises:
        DiskFullError: the results folder is full (no row was written, the marker is gone).
        RunInterrupted: the sweep was interrupted (no row was written, the marker is gone).
    """
    store = as_store(results_dir)
    row, rid = spec.base_row, spec.base_row["run_id"]
    old = _current(store, rid)
    if old is not None and old["status"] in R.DONE_STATUSES:
        return old
    # the execution this worker means to run: a retry names it, else the next one
    intended = row.get("attempt") or R.executions(old) + 1
    while store.claim(row, timeout_s) is not None:  # another worker runs it: wait
        time.sleep(CLAIM_POLL_S)
    attempt = R.executions(theirs := _current(store, rid)) + 1
    if attempt > intended and theirs is not None:
        # another worker executed it since this one decided to: that execution was this one's
        # attempt too (two drivers never apply their attempts one after the other's)
        store.release(rid)
        return theirs
    spec = replace(spec, base_row=dict(row, attempt=attempt))
    row = spec.base_row
    # not a daemon: it starts the run's stages (and torchrun for DDP); it still dies with this
    # worker (die_with_parent) and is killed below on timeout, and its stages die with it
    proc = context().Process(target=_child, args=(spec, str(store.root)), daemon=False)
    timed_out = stopped = False
    try:
        if (done := store.finished(rid)) is not None:  # the other worker finished it
            return done
        if STOP.is_set():
            raise RunInterrupted(rid)
        store.discard(rid)  # an old failed row is redone
        proc.start()
        stopped = True  # until the child ends by itself or times out
        store.mark_started(row, timeout_s, proc.pid)
        deadline = time.monotonic() + timeout_s
        while proc.is_alive() and time.monotonic() < deadline and not STOP.is_set():
            proc.join(min(STOP_POLL_S, max(0.0, deadline - time.monotonic())))
        if STOP.is_set() and proc.is_alive():
            raise RunInterrupted(rid)
        timed_out, stopped = proc.is_alive(), False
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        store.release(rid)
        if stopped:
            store.drop_empty_logs(rid)
    if (written := store.read(rid)) is not None:
        return written
    if (code := {v: k for k, v in FULL_EXIT.items()}.get(proc.exitcode)) is not None:
        raise fsio.DiskFullError(store.row_path(rid), code)  # the child found it full: no row
    if timed_out:
        status, error = "timeout", f"run exceeded {timeout_s:.0f} s and was killed"
    elif proc.exitcode == -signal.SIGKILL:
        status, error = (
            "failed",
            (
                "child process was killed by SIGKILL (by the kernel's out-of-memory killer, a "
                "scheduler or a user: the signal does not say which)"
            ),
        )
    else:
        status, error = "failed", f"child process exited with code {proc.exitcode} and no row"
    return store.record(dict(row, status=status, error=error))


def record_lost(
    spec: RunSpec,
    results_dir: str | Path | RunStore,
    reason: str,
    executor: str = "",
    job_id: str = "",
    log_path: str = "",
) -> dict[str, Any]:
    """The row of a run whose worker or job died before returning (recorded by the dispatcher).

    A row the worker managed to write wins; otherwise a ``failed`` row naming the executor, the
    job and its log is written (not a final status: a resubmitted sweep runs it again) and the
    marker removed. Called while handling the worker's error (as executors do), a full results
    folder is raised again instead: its row could not be written either, and the sweep stops.

    Raises:
        DiskFullError: the worker died of a full results folder, or the row does not fit.
    """
    store = as_store(results_dir)
    rid = spec.base_row["run_id"]
    store.release(rid)
    pending = sys.exc_info()[1]
    if pending is not None and results_full(pending, store.root) is not None:
        raise pending
    if (done := store.finished(rid)) is not None:
        return done
    row = dict(spec.base_row, status="failed", error=reason[:ERROR_CHARS])
    job = {"executor": executor, "job_id": job_id, "log_path": log_path}
    row.update({k: v for k, v in job.items() if v})
    return store.record(row)


__all__ = [
    "FULL_EXIT",
    "STOP",
    "RunInterrupted",
    "record_lost",
    "results_full",
    "run_one",
    "start_forkserver",
]
