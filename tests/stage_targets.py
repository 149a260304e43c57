"""Stage bodies for tests/test_stage.py (a forkserver child imports them by module name)."""

import os
import signal
from multiprocessing import forkserver


def done(chan, value):
    chan.send("epoch", {"n": 1}, b"abc")
    chan.send("done", {"value": value}, b"\x01\x02")


def fails(chan):
    raise RuntimeError("boom in the stage")


def killed(chan):
    os.kill(os.getpid(), signal.SIGKILL)


def malformed(chan):
    chan.conn.send_bytes(b"not json")


def pickled(chan):
    chan.conn.send(("a", "pickle"))  # what a stage must never make its supervisor unpickle


def servers(chan):
    """Start a stage from this stage (as a supervisor does): report whether a new server started."""
    from pebench.stage import adopt_forkserver, run_stage

    adopt_forkserver()
    run_stage("inner", done, (1,))
    chan.send("done", {"own_server": forkserver._forkserver._forkserver_pid is not None})
