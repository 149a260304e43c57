"""The two lock files (a prepare's unit, a leaderboard write): ``filelock``, removed on release."""

import re
import threading
import time
from pathlib import Path

import pytest

from pebench import fsio
from pebench.report import commit

ROOT = Path(__file__).resolve().parents[1]


def test_filelock_is_a_declared_dependency():
    deps = re.search(r"\ndependencies = \[(.*?)\n\]", (ROOT / "pyproject.toml").read_text(), re.S)
    assert re.search(r'"filelock>=[0-9.]+"', deps[1])


def test_a_held_lock_refuses_a_second_holder_and_its_file_goes_with_the_release(tmp_path):
    path = tmp_path / "unit" / ".lock"
    with fsio.exclusive(path, wait=False):
        assert path.exists()
        with pytest.raises(fsio.LockHeldError), fsio.exclusive(path, wait=False):
            pass
    assert not path.exists()
    path.touch()  # a killed holder's file: reused, then removed
    with fsio.exclusive(path, wait=False):
        pass
    assert list(path.parent.iterdir()) == []


def test_a_leaderboard_write_waits_for_the_writer_before_it(tmp_path):
    held, order = threading.Event(), []

    def first() -> None:
        with commit.locked(tmp_path):
            held.set()
            time.sleep(0.3)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(10)
    commit.write_unit(tmp_path, {tmp_path / "a.txt": b"a"})
    order.append("second written")
    thread.join()
    assert order == ["first done", "second written"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no lock file left
