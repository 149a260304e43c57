"""A prepare killed at any point: the previous cache stays readable, the next prepare cleans up.

The kill tests fork a child that runs ``prepare`` with every file-system primitive it uses
wrapped (open, rename, link, unlink, fsync, fallocate, rmtree, the image decoder...): the child
SIGKILLs itself at the k-th such call, for k = 1, 2, ... until a run completes. After each kill
the parent checks that readers find the old or the new cache (never a mix, never nothing) and that
the next prepare succeeds and leaves no ``.tmp-*``, ``.old-*`` or lock file behind. The hooks live
in this test only; the shipped code has none.
"""

import fcntl
import os
import shutil
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest
from noah_data import make_noah, small_spec

import pebench.datasets.cache as C
import pebench.datasets.cache_decode as decode
from pebench.datasets.cache import CacheError, CacheMissingError, load, manifest_hash, prepare

SPLITS = ("train800", "val200", "train800val200", "test")
#: every primitive prepare and install touch the disk with (each call is a kill point)
HOOKS = [
    (os, "open"),
    (os, "replace"),
    (os, "rename"),
    (os, "link"),
    (os, "unlink"),
    (os, "rmdir"),
    (os, "mkdir"),
    (os, "fsync"),
    (os, "chmod"),
    (os, "posix_fallocate"),
    (shutil, "rmtree"),
    (shutil, "copy2"),
    (tempfile, "mkdtemp"),
    (np, "save"),
    (np.lib.format, "write_array_header_1_0"),
    (fcntl, "flock"),
    (Path, "write_text"),
    (decode, "decode_image"),  # looked up where the decoder runs, not in cache.py
]


def _killed_at(k, work):
    """Run ``work`` in a forked child SIGKILLed at the k-th hooked call; True if it was."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            calls = [0]

            def hook(fn):
                def wrapped(*args, **kwargs):
                    calls[0] += 1
                    if calls[0] == k:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return fn(*args, **kwargs)

                return wrapped

            for owner, name in HOOKS:
                setattr(owner, name, hook(getattr(owner, name)))
            work()
        except BaseException:
            os._exit(3)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, "the prepare failed without being killed"
    return False


def _arrays(spec, cache):
    return {s: load(spec, s, cache, 8) for s in SPLITS}


def _same(a, b):
    return all(np.array_equal(a[s][0], b[s][0]) and np.array_equal(a[s][1], b[s][1]) for s in a)


def _litter(unit):
    return sorted(p for p in os.listdir(unit) if p != "8px")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Raw data A, raw data B (test list reordered: only test is decoded again), cache of A."""
    tmp = tmp_path_factory.mktemp("kill")
    spec = small_spec()
    raw_a, raw_b = tmp / "a", tmp / "b"
    make_noah(raw_a, "kitti", {"train800": 8, "val200": 4, "test": 8}, 4)
    shutil.copytree(raw_a, raw_b)
    lines = (raw_b / "kitti/test.txt").read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    (raw_b / "kitti/test.txt").write_text("\n".join(lines) + "\n")
    pristine = tmp / "cache_a"
    prepare([spec], "noah", raw_a, pristine, 8)
    new = tmp / "cache_b"
    prepare([spec], "noah", raw_b, new, 8)
    return spec, raw_b, pristine, _arrays(spec, pristine), _arrays(spec, new)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["update", "force", "first"])
def test_a_kill_at_any_point_keeps_a_readable_cache_and_leaves_no_litter(data, tmp_path, scenario):
    spec, raw_b, pristine, old, new = data
    points, force = 0, scenario == "force"
    for k in range(1, 500):
        cache = tmp_path / f"k{k}"
        if scenario != "first":
            shutil.copytree(pristine, cache)
        if not _killed_at(k, lambda c=cache: prepare([spec], "noah", raw_b, c, 8, force=force)):
            break
        points += 1
        unit = cache / "vtab/kitti"
        # readers find the old cache or the new one, whole
        if scenario == "first" and not (unit / "8px").exists():
            with pytest.raises(CacheMissingError):
                load(spec, "test", cache, 8)
        else:
            got = _arrays(spec, cache)
            assert _same(got, old) or _same(got, new), f"kill at call {k}: a mix of two caches"
            if scenario == "first":
                assert _same(got, new)
        # the next prepare completes and leaves nothing behind
        prepare([spec], "noah", raw_b, cache, 8)
        assert _litter(unit) == [], f"kill at call {k}"
        assert _same(_arrays(spec, cache), new)
        shutil.rmtree(cache)
    assert points > 20  # every primitive of prepare and install was a kill point


def test_readers_fall_back_to_the_copy_an_install_set_aside(data, tmp_path):
    spec, raw_b, pristine, old, _ = data
    for layout in ("current", "legacy"):  # legacy: .old-<S>px-<random>/x of earlier versions
        cache = tmp_path / layout
        shutil.copytree(pristine, cache)
        unit = cache / "vtab/kitti"
        aside = unit / ".old-8px-12345-abcd"
        if layout == "current":
            os.rename(unit / "8px", aside)
        else:
            aside.mkdir()
            os.rename(unit / "8px", aside / "x")
        (unit / ".tmp-8px-zz9").mkdir()  # the new copy the killed install had not moved yet
        assert not (unit / "8px").exists()
        assert _same(_arrays(spec, cache), old)  # the killed install lost nothing
        assert manifest_hash(cache, spec) == manifest_hash(pristine, spec)
        C.check_splits(spec, cache, 8)
        (report,) = prepare([spec], "noah", raw_b, cache, 8)
        assert report.status == "written" and report.decoded == 8  # built on the old cache
        assert _litter(unit) == []


def test_litter_of_killed_prepares_is_removed_even_when_up_to_date(data, tmp_path):
    spec, raw_b, _, _, new = data
    cache = tmp_path / "c"
    prepare([spec], "noah", raw_b, cache, 8)
    unit = cache / "vtab/kitti"
    (unit / ".tmp-8px-a1b2").mkdir()
    (unit / ".tmp-8px-a1b2/test.images.npy").write_bytes(b"\0" * 4096)
    shutil.copytree(unit / "8px", unit / ".old-8px-999-ffff")
    (unit / ".lock").touch()  # a killed prepare's lock file
    (unit / ".tmp-16px-c3").mkdir()  # another size's: the unit is cleaned as a whole
    (report,) = prepare([spec], "noah", raw_b, cache, 8)
    assert report.status == "up to date"
    assert sorted(os.listdir(unit)) == ["8px"]
    assert _same(_arrays(spec, cache), new)


def test_a_second_prepare_of_a_unit_is_refused_while_one_writes(data, tmp_path):
    spec, raw_b, pristine, old, _ = data
    cache = tmp_path / "c"
    shutil.copytree(pristine, cache)
    lock = cache / "vtab/kitti/.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(
            CacheError,
            match=rf"vtab/kitti: another pebench prepare is writing {cache / 'vtab/kitti'} "
            r"\(it holds .*\.lock\); wait for it to finish",
        ):
            prepare([spec], "noah", raw_b, cache, 8)
    finally:
        os.close(fd)
    assert _same(_arrays(spec, cache), old)
    prepare([spec], "noah", raw_b, cache, 8)  # released: goes ahead, and removes the file
    assert sorted(os.listdir(cache / "vtab/kitti")) == ["8px"]
