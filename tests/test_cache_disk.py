"""``pebench prepare`` on a full disk: one clear line, exit 2, nothing left behind (never SIGBUS).

Three ways to be out of space: ``shutil.disk_usage`` reporting little free (the check before
writing), a file-size limit (``RLIMIT_FSIZE``: writes fail with ``EFBIG``) and a real 2 MiB tmpfs
mounted in a user namespace (``unshare``; skipped where that is not allowed). The last two run
``pebench prepare`` in a child process, so a ``SIGBUS`` would show as its exit status.
"""

import os
import shutil
import subprocess
import sys
import textwrap
from collections import namedtuple
from pathlib import Path

import pytest
from noah_data import make_noah, prepare_main, small_spec

from pebench.datasets.cache import CacheError, load, prepare

TESTS = Path(__file__).resolve().parent
Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def small(tmp_path):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    make_noah(raw, "kitti", {"train800": 8, "val200": 4, "test": 8}, 4)
    return small_spec(), raw, cache


def test_too_little_free_space_is_refused_before_writing(small, monkeypatch, capsys):
    spec, raw, cache = small
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(
        CacheError,
        match=rf"vtab/kitti: not enough disk space in {cache / 'vtab/kitti'}: the cache needs "
        r"[\d,]+ bytes, 1,000 are free; free some space or choose another --cache-dir",
    ):
        prepare([spec], "noah", raw, cache, 8)
    assert not cache.exists()  # not even the folders made for it

    import pebench.datasets.cache as C

    monkeypatch.setattr(C, "resolve_specs", lambda sel: [spec])
    argv = ["vtab/kitti", "--source", "noah", "--data-dir", str(raw), "--cache-dir", str(cache)]
    assert prepare_main([*argv, "--image-size", "8", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pebench: error: vtab/kitti: not enough disk")
    assert not cache.exists()


def test_needed_bytes_cover_what_is_written(small, monkeypatch):
    spec, raw, cache = small
    seen = []
    real = shutil.disk_usage

    def usage(path):
        seen.append(path)
        return real(path)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    prepare([spec], "noah", raw, cache, 16)
    written = sum(p.stat().st_size for p in (cache / "vtab/kitti/16px").iterdir())
    from pebench.datasets.cache_store import _check_space

    lists = {name: type("L", (), {"labels": [0] * n})() for name, n in C_SIZES.items()}
    need, _ = _check_space("u", cache, lists, None, 16)
    assert written <= need < written + 200_000 and seen[0] == cache / "vtab/kitti"


C_SIZES = {"train800": 8, "val200": 4, "train800val200": 12, "test": 8}

CHILD = textwrap.dedent(
    """
    import os, resource, shutil, signal, sys
    from collections import namedtuple
    limit, fake_free, argv = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3:]
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    if fake_free:  # get past the check before writing: the writes themselves must fail cleanly
        shutil.disk_usage = lambda p: namedtuple("U", "total used free")(1 << 40, 0, 1 << 40)
    import pebench.datasets.cache as C
    sys.path.insert(0, os.environ["PEBENCH_TESTS"])
    from noah_data import small_spec
    C.resolve_specs = lambda sel: [small_spec()]
    from pebench.cli import main
    sys.exit(main(["prepare", *argv]))
    """
)


def _child(tmp_path, limit, fake_free, raw, cache, size, prefix=()):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    argv = ["vtab/kitti", "--source", "noah", "--data-dir", str(raw), "--cache-dir", str(cache)]
    cmd = [sys.executable, str(script), str(limit), "1" if fake_free else "0", *argv]
    cmd += ["--image-size", str(size), "--quiet"]
    env = {**os.environ, "PEBENCH_TESTS": str(TESTS), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([*prefix, *cmd], capture_output=True, text=True, env=env, timeout=120)


def test_file_size_limit_gives_one_line_and_no_litter(small, tmp_path):
    spec, raw, cache = small
    out = _child(tmp_path, 64 * 1024, True, raw, cache, 64)  # images file: 8 x 64 x 64 x 3 > 64 KiB
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(
        f"pebench: error: vtab/kitti: writing the cache in {cache / 'vtab/kitti'}"
    )
    assert "failed: File too large; it needs about" in line and "nothing was kept" in line
    assert not cache.exists()


def test_full_disk_keeps_the_previous_cache(small, tmp_path):
    spec, raw, cache = small
    prepare([spec], "noah", raw, cache, 64)
    before = load(spec, "test", cache, 64)[0].copy()
    (raw / "kitti/test.txt").write_text((raw / "kitti/test.txt").read_text() + "\n")  # changed
    out = _child(tmp_path, 64 * 1024, True, raw, cache, 64)
    assert out.returncode == 2, out.stderr[-2000:]
    assert (load(spec, "test", cache, 64)[0] == before).all()
    assert sorted(os.listdir(cache / "vtab/kitti")) == ["64px"]


def _can_unshare():
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "-Urm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /tmp && echo ok"]
    try:
        out = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and out.stdout.strip() == "ok"


@pytest.mark.skipif(not _can_unshare(), reason="no user namespaces to mount a small tmpfs")
def test_prepare_into_a_2_mib_filesystem(small, tmp_path):
    spec, raw, cache = small
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (tmp_path / "child.py").write_text(CHILD)
    # 32 images of 160 x 160 x 3: 2.4 MB, more than the 2 MiB filesystem holds
    args = f"vtab/kitti --source noah --data-dir {raw} --cache-dir {mnt / 'c'} --image-size 160"
    child = f"{sys.executable} {tmp_path / 'child.py'}"
    shell = textwrap.dedent(
        f"""
        mount -t tmpfs -o size=2m tmpfs {mnt} || exit 99
        {child} 0 0 {args} --quiet 2> {tmp_path / "err1"}
        echo "check $? $(find {mnt} -mindepth 1 | wc -l)"
        {child} 0 1 {args} --quiet 2> {tmp_path / "err2"}
        echo "enospc $? $(find {mnt} -mindepth 1 | wc -l)"
        """
    )
    env = {**os.environ, "PEBENCH_TESTS": str(TESTS), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", shell], capture_output=True, text=True, env=env, timeout=300
    )
    results = {ln.split()[0]: ln.split()[1:] for ln in out.stdout.splitlines()}
    assert set(results) == {"check", "enospc"}, out.stdout + out.stderr
    # refused by the free-space check: one line naming the folder and both byte counts
    err1 = (tmp_path / "err1").read_text().strip()
    assert results["check"] == ["2", "0"], err1  # exit 2, nothing left on the filesystem
    assert len(err1.splitlines()) == 1 and "not enough disk space in" in err1, err1
    # past the check (free space misreported), the write itself fails: ENOSPC, never SIGBUS
    err2 = (tmp_path / "err2").read_text().strip()
    assert results["enospc"] == ["2", "0"], err2
    assert len(err2.splitlines()) == 1 and "failed: No space left on device" in err2, err2


def test_read_only_cache_is_checked_but_never_written(small, monkeypatch):
    import errno

    spec, raw, cache = small
    prepare([spec], "noah", raw, cache, 8)
    real_open = os.open

    def read_only(path, *args, **kwargs):  # the unit folder refuses new files, as a ro mount does
        if str(path).endswith(".lock"):
            raise PermissionError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    (report,) = prepare([spec], "noah", raw, cache, 8)
    assert report.status == "up to date"
    (raw / "kitti/test.txt").write_text((raw / "kitti/test.txt").read_text() + "\n")
    with pytest.raises(
        CacheError,
        match=rf"vtab/kitti: cannot write the cache in {cache / 'vtab/kitti'} \(Read-only file "
        r"system\); choose another --cache-dir",
    ):
        prepare([spec], "noah", raw, cache, 8)
