"""A run's stages in processes of their own, talking to their supervisor in plain bytes.

A run (:func:`pebench.supervise.execute`) is three processes: its supervisor, which never imports
a method plugin, and two stages it starts, which do: training (:mod:`pebench.trainer`) and
prediction (:mod:`pebench.predictor`). Each stage is a fresh child of the ``forkserver`` (pebench
and torch preloaded, no plugin, no data), dies with its supervisor, and sends JSON messages and
raw byte blocks over a one-way pipe. Nothing a stage sends is ever unpickled: plugin code runs
there, and a pickle from it would be code run in the supervisor.

Light: no torch import here (the run worker imports this module).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from pebench.run import StageError, classify, error_text

#: modules the forkserver imports once, so that every stage starts warm (no plugin among them)
PRELOAD = [
    "pebench.run",
    "pebench.train",
    "pebench.metrics",
    "pebench.backbones",
    "pebench.method",
    "pebench.supervise",
    "pebench.trainer",
    "pebench.predictor",
]
#: largest JSON message a stage may send (an epoch record, the trained row)
MAX_MESSAGE = 1 << 20
#: largest byte block a stage may send (a tunable state, the predictions)
MAX_BLOCK = 1 << 36
#: how often the supervisor looks at a stage that has not written
POLL_S = 0.25


def context() -> mp.context.BaseContext:
    """The start method of run processes and stages: ``forkserver`` (pebench preloaded)."""
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
    return ctx


def adopt_forkserver() -> None:
    """In a child of the forkserver: start stages through that server, not a new one.

    A forkserver child inherits the server's address and its "alive" pipe but not its pid, so
    ``multiprocessing`` would start a second server (importing torch and pebench again: about
    3 s per run). The server is alive as long as the process that asked for this child is,
    and this process dies with that one (:func:`die_with_parent`), so it is used as is. Relies
    on CPython's ``multiprocessing.forkserver`` internals (unchanged since 3.4); where they
    differ nothing is adopted and a stage start only costs a server of its own.
    """
    from multiprocessing import forkserver, resource_tracker

    server = getattr(forkserver, "_forkserver", None)
    if server is None or getattr(server, "_forkserver_pid", 0) is not None:
        return
    if getattr(server, "_forkserver_address", None) is None:
        return
    if getattr(server, "_forkserver_alive_fd", None) is None:
        return
    server.ensure_running = resource_tracker.ensure_running


def die_with_parent() -> None:
    """Exit this child as soon as the process that started it is gone (no orphan ever writes).

    A forkserver child's parent sentinel is its connection to the process that asked for it, so
    it becomes readable when that process dies (killed job, timeout, lost node), even though the
    forkserver is the child's OS parent.
    """
    from multiprocessing.connection import wait

    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(70)

    threading.Thread(target=watch, name="pebench-parent-watch", daemon=True).start()


def own_progress_lock() -> None:
    """Give progress bars a lock of this process alone, so a kill leaves no semaphore behind.

    tqdm's first bar (even a disabled one) makes a ``multiprocessing.RLock``. In a process the
    forkserver started, the default start method is ``forkserver``, so that lock is a named
    POSIX semaphore registered with the resource tracker the whole sweep shares, and only a
    normal exit unlinks it. A stage or run process killed on a timeout or a Ctrl-C (it exits
    with ``os._exit`` when its parent dies) left it registered, and the tracker printed
    "leaked semaphore objects" warnings when the sweep ended. A bar is drawn by the process
    that made it alone, so a thread lock is all it needs.
    """
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


class Channel:
    """A stage's end of the pipe: JSON messages, each optionally followed by one byte block."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def send(self, kind: str, body: dict[str, Any] | None = None, block: bytes | None = None):
        """Send message ``kind`` with ``body`` (JSON data) and, when given, ``block``."""
        head = {"kind": kind, "body": body or {}, "block": block is not None}
        self.conn.send_bytes(json.dumps(head).encode())
        if block is not None:
            self.conn.send_bytes(block)


def _main(target: Callable[..., None], conn: Any, env: dict[str, str], *args: Any) -> None:
    """A stage's process: run ``target(channel, *args)``; an exception becomes an error message."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what stops
    die_with_parent()
    own_progress_lock()  # before any plugin or training code opens a bar
    os.environ.update(env)  # e.g. CUDA_VISIBLE_DEVICES, before CUDA is initialised

    chan = Channel(conn)
    try:
        target(chan, *args)
    except BaseException as err:  # reported to the supervisor, which writes the row
        chan.send("error", {"status": classify(err), "error": error_text(err)})
    finally:
        conn.close()


def _receive(conn: Any, name: str) -> tuple[dict[str, Any], bytes | None]:
    """One message from a stage, checked for shape (a stage runs plugin code)."""
    try:
        head = json.loads(conn.recv_bytes(MAX_MESSAGE))
        block = conn.recv_bytes(MAX_BLOCK) if head.get("block") is True else None
    except (OSError, ValueError) as err:
        raise StageError("failed", f"{name} process sent a malformed message: {err}") from None
    if not isinstance(head, dict) or not isinstance(head.get("body"), dict):
        raise StageError("failed", f"{name} process sent a malformed message")
    return head, block


def run_stage(
    name: str,
    target: Callable[..., None],
    args: tuple[Any, ...],
    on_message: Callable[[str, dict[str, Any], bytes | None], None] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[dict[str, Any], bytes | None]:
    """Run ``target(channel, *args)`` in a fresh stage process; its ``done`` message and block.

    Other messages go to ``on_message(kind, body, block)`` as they arrive. ``args`` are pickled
    by this (trusted) process for the child; nothing comes back but bytes. ``env`` is set in the
    child before anything runs.

    Raises:
        StageError: the stage reported an error (its status and text), or died without a result
            (killed, crashed: named with its exit code).
    """
    ctx = context()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_main, args=(target, send, dict(env or {}), *args), daemon=False, name=name
    )
    proc.start()
    send.close()
    try:
        while proc.is_alive() or recv.poll(0):  # what a dead stage sent is still read
            if not recv.poll(POLL_S):
                continue
            try:
                head, block = _receive(recv, name)
            except EOFError:
                break
            kind, body = head.get("kind"), head["body"]
            if kind == "done":
                return body, block
            if kind == "error":
                raise StageError(str(body.get("status", "failed")), str(body.get("error", "")))
            if on_message is not None:
                on_message(str(kind), body, block)
    finally:
        recv.close()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    code = proc.exitcode
    how = "was killed by SIGKILL" if code == -signal.SIGKILL else f"exited with code {code}"
    raise StageError("failed", f"{name} process {how} without a result")


__all__ = [
    "Channel",
    "adopt_forkserver",
    "context",
    "die_with_parent",
    "own_progress_lock",
    "run_stage",
]
