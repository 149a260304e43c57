"""Helpers for tests that press Ctrl-C on a ``pebench`` command run as a process group."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def cli_env() -> dict[str, str]:
    """The environment of a ``pebench`` subprocess: offline, this checkout and tests/ importable."""
    path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT), str(TESTS)]))
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}


def wait_for(predicate: Callable[[], bool], timeout: float = 120.0) -> bool:
    """Poll ``predicate`` every 50 ms until it holds (True) or ``timeout`` seconds pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def like_a_terminal(nice: int = 0) -> Callable[[], None]:
    """A ``preexec_fn`` for a command a test presses Ctrl-C on: SIGINT at its default, as a shell.

    A shell without job control starts a background command with SIGINT ignored (``cmd &``: a
    test suite started as ``nohup .ci/run &`` or from a script), the ignored disposition survives
    ``exec``, and Python then installs no ``KeyboardInterrupt`` handler: the command would never
    see the Ctrl-C and would run to its end. ``nice`` lowers the command's priority, so that its
    runs cannot starve the test's polling loop of the CPU.
    """

    def preexec() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if nice:
            os.nice(nice)

    return preexec


def ctrl_c(
    cmd: Sequence[str], until: Callable[[], bool], wait_s: float = 120.0, exit_s: float = 120.0
) -> tuple[int, str, int]:
    """Start ``cmd`` in its own session, wait for ``until``, then SIGINT its whole group.

    A terminal's Ctrl-C reaches the foreground process group, so every process of the command
    gets it. The group is SIGKILLed if anything fails on the way.

    Returns:
        ``(return code, stderr, process group id)``.

    Raises:
        AssertionError: ``until`` never held within ``wait_s`` seconds.
    """
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        start_new_session=True,
        preexec_fn=like_a_terminal(),
    )
    try:
        if not wait_for(until, wait_s):
            raise AssertionError(f"never reached the moment to press Ctrl-C: {' '.join(cmd)}")
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=exit_s)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return proc.returncode, err, proc.pid
