"""A run's stages: fresh processes that talk to their supervisor in bytes, never in pickles."""

import pytest
import stage_targets as T

from pebench.run import StageError
from pebench.stage import run_stage


def test_a_stage_returns_its_done_message_and_block_and_streams_the_others():
    seen = []
    body, block = run_stage("s", T.done, (7,), lambda k, b, blk: seen.append((k, b, blk)))
    assert (body, block) == ({"value": 7}, b"\x01\x02")
    assert seen == [("epoch", {"n": 1}, b"abc")]


@pytest.mark.parametrize(
    ("target", "status", "message"),
    [
        (T.fails, "failed", "RuntimeError: boom in the stage"),
        (T.killed, "failed", "s process was killed by SIGKILL without a result"),
        (T.malformed, "failed", "s process sent a malformed message"),
        (T.pickled, "failed", "s process sent a malformed message"),
    ],
)
def test_a_stage_that_fails_dies_or_sends_anything_but_bytes_is_one_error(target, status, message):
    with pytest.raises(StageError, match=message) as err:
        run_stage("s", target, ())
    assert err.value.status == status


def test_a_stage_started_by_a_stage_comes_from_the_same_forkserver():
    """A forkserver child starting a stage used to start a server of its own (~3 s a run)."""
    body, _ = run_stage("outer", T.servers, ())
    assert body == {"own_server": False}
