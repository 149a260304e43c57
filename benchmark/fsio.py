"""Durable files: the one home of atomic writes, temp-file names, folder fsync and full disks.

Every pebench writer goes through here (rows and their records, markers, the conformance memo,
budget copies, prepared caches, the leaderboard's outputs), so there is one temp-name scheme and
one way a write fails:

- a file appears complete or not at all (:func:`atomic_write_bytes`: a temp file in the target's
  folder, written, fsynced, renamed; the folder fsynced after);
- a temp file names its writer (``.<name>.<pid>@<host>.<random>.tmp``, :func:`temp_prefix`), so
  one left by a killed writer is recognised and removed (:func:`remove_stale_temps`) while writes
  in progress are left alone;
- a write that finds the disk full leaves no temp file and raises :class:`DiskFullError` (one
  line, exit 2 at the CLI), never a chain of ``OSError`` tracebacks;
- files take the user's umask (:func:`umask`), never a forced mode;
- nothing is written through a symbolic link planted at the target (the rename replaces the
  link itself).

Torch-free, and imports nothing of pebench but its error base class.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pebench.errors import PebenchError

#: ``errno`` of a write that failed for lack of room: no space left, disk quota exceeded
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
#: suffix of every temp file an atomic write creates (``.<name>.<pid>@<host>.<random>.tmp``)
TEMP_SUFFIX = ".tmp"
#: a temp file older than this is abandoned, whoever wrote it (an atomic write takes
#: milliseconds; the same bound as a marker's takeover lock)
TEMP_STALE_S = 30.0
_TEMP_OWNER = re.compile(r"\.(\d+)@([A-Za-z0-9._-]+)\.[^.]+" + re.escape(TEMP_SUFFIX) + "$")


class DiskFullError(PebenchError, OSError):
    """A write that failed for lack of space or quota (``ENOSPC``/``EDQUOT``).

    The target file was left as it was and no temp file remains. An ``OSError`` too, with the
    ``errno`` of the failure and the target as ``filename``.
    """

    def __init__(self, path: str | Path, code: int) -> None:
        super().__init__(code, os.strerror(code), str(path))
        self.path = Path(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.errno)

    def __str__(self) -> str:
        return (
            f"folder {self.path.parent} is full ({self.strerror}): {self.path.name} was not "
            "written; rerun the same command when there is space"
        )


def is_full(err: BaseException | None) -> bool:
    """Whether ``err`` is a write that failed for lack of space or quota."""
    return isinstance(err, OSError) and err.errno in FULL_ERRNOS


def umask() -> int:
    """This process's umask: from ``/proc`` on Linux (no change at all), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def host() -> str:
    """This host's name, reduced to the characters a file name may safely hold."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())


def temp_prefix(path: str | Path) -> str:
    """The name prefix of a temp file written next to ``path``: ``.<name>.<pid>@<host>.``.

    Naming the writer lets :func:`temp_is_stale` tell a write in progress from one whose writer
    was killed (a zero-byte or partial leftover).
    """
    return f".{Path(path).name}.{os.getpid()}@{host()}."


def temp_pattern(name: str) -> str:
    """The glob of the temp files :func:`temp_prefix` names for a target called ``name``."""
    return f".{name}.*{TEMP_SUFFIX}"


def temp_is_stale(path: str | Path, now: float | None = None) -> bool:
    """Whether temp file ``path`` is abandoned.

    Abandoned: its writer (named by :func:`temp_prefix`) is a dead process of this host, or it is
    older than :data:`TEMP_STALE_S` (a writer on another host, or a name without a writer).
    """
    path = Path(path)
    owner = _TEMP_OWNER.search(path.name)
    if owner is not None and owner.group(2) == host() and int(owner.group(1)) != os.getpid():
        try:
            os.kill(int(owner.group(1)), 0)
        except ProcessLookupError:
            return True
        except OSError:  # alive under another user (or not ours to judge): the age decides
            pass
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except OSError:
        return False
    return age > TEMP_STALE_S


def remove_stale_temps(folder: str | Path, pattern: str = f".*{TEMP_SUFFIX}") -> list[Path]:
    """Remove the abandoned temp files (:func:`temp_is_stale`) of ``folder``; returns them.

    Writes in progress (their writer alive, the file young) are left alone, so this is safe
    while other processes write into the same folder.
    """
    removed = []
    for path in sorted(Path(folder).glob(pattern)):
        if path.is_dir() or not temp_is_stale(path):
            continue
        with contextlib.suppress(OSError):  # gone meanwhile, or another user's file
            path.unlink()
            removed.append(path)
    return removed


class LockHeldError(PebenchError):
    """Another process holds the lock file :func:`exclusive` was asked not to wait for."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(f"{path} is held by another process")
        self.path = Path(path)


class _Replaced(Exception):
    """The file just locked is no longer the one at the lock path (its last holder removed it)."""


@contextlib.contextmanager
def exclusive(path: str | Path, *, wait: bool = True) -> Iterator[None]:
    """Hold the exclusive lock of the lock file ``path``, and remove the file on release.

    A :class:`filelock.FileLock` (``flock`` on POSIX, never the soft fallback: a filesystem
    without ``flock`` is an ``OSError``, not a weaker lock). A killed holder's lock is released
    by the kernel and its file reused by the next holder. The file is removed before the lock
    is released, and an acquirer that locked a file no longer at ``path`` (its last holder removed
    it meanwhile) locks the new one instead, so the removal never admits two holders.

    Args:
        path: the lock file (created, with its folder, when missing).
        wait: wait for another holder to release it; False: raise at once.

    Raises:
        LockHeldError: ``wait`` is False and another process holds the lock.
        OSError: the lock file cannot be created or locked (a read-only folder, a full disk).
    """
    from filelock import FileLock, Timeout

    def same_file(fd: int) -> None:
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:
            raise _Replaced

    while True:
        lock = FileLock(path, -1 if wait else 0, fallback_to_soft=False, on_acquired=same_file)
        try:
            lock.acquire()
        except _Replaced:
            continue  # its last holder removed the file we locked: lock the one there now
        except Timeout:
            raise LockHeldError(path) from None
        break
    try:
        yield
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        lock.release()


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the file descriptor ``fd`` (``os.write`` until done)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(folder: str | Path) -> None:
    """Make renames inside ``folder`` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_temp(target: str | Path, data: bytes) -> Path:
    """A fresh, fsynced temp file next to ``target`` holding ``data`` (the caller renames it).

    The file is private to this writer (``mkstemp``: created exclusively, never through a link)
    and takes the user's umask. On any error no temp file remains.

    Raises:
        DiskFullError: no space or quota left.
    """
    target = Path(target)
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=target.parent, prefix=temp_prefix(target), suffix=TEMP_SUFFIX
        )
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~umask())  # as open() would create it: the user's umask rules
        return Path(tmp)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if is_full(err):
            raise DiskFullError(target, err.errno) from err  # type: ignore[union-attr]
        raise


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename).

    A link planted at ``path`` is replaced, never followed. With ``durable`` the folder is
    fsynced after the rename, so the new name survives a power loss.

    Raises:
        DiskFullError: no space or quota left; ``path`` is as it was and the temp file is gone.
    """
    path = Path(path)
    tmp = write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if is_full(err):
            raise DiskFullError(path, err.errno) from err  # type: ignore[union-attr]
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str, durable: bool = True) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"), durable)


def open_new(path: str | Path, mode: str = "w") -> Any:
    """Open ``path`` as a new file for writing, never through a link planted there.

    Whatever is at ``path`` (an old log, or a symbolic link to another user's file) is removed
    first, then the file is created exclusively and without following links, so a write can
    only land in a fresh file of the caller's. For text files that are appended to while a run
    goes (logs); results use :func:`atomic_write_bytes`.

    Raises:
        OSError: ``path`` could not be created (e.g. a link was planted again in between).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o666)  # the umask applies
    return os.fdopen(fd, mode, encoding="utf-8", newline="" if "b" not in mode else None)


def fresh_dir(path: str | Path) -> Path:
    """``path`` as a real folder of its own: a symbolic link planted there is removed first."""
    path = Path(path)
    if path.is_symlink():
        path.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def move(src: str | Path, dest: str | Path) -> Path:
    """Rename ``src`` to ``dest`` (its folder created), durably; returns ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)
    fsync_dir(dest.parent)
    return dest


__all__ = [
    "FULL_ERRNOS",
    "TEMP_STALE_S",
    "TEMP_SUFFIX",
    "DiskFullError",
    "LockHeldError",
    "atomic_write_bytes",
    "atomic_write_text",
    "exclusive",
    "fresh_dir",
    "fsync_dir",
    "host",
    "is_full",
    "move",
    "open_new",
    "remove_stale_temps",
    "temp_is_stale",
    "temp_pattern",
    "temp_prefix",
    "umask",
    "write_all",
    "write_temp",
]
