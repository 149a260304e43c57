"""The cache's folder mechanics: atomic install, litter of killed prepares, lock, disk space.

A folder appears complete or not at all: it is written under ``.tmp-<S>px-*`` and renamed into
place (:func:`_install`); the cache it replaces waits as ``.old-<S>px-*``, where readers find it
(:func:`_installed`) until the new one is in place. One prepare at a time writes a unit
(:func:`_unit_lock`), and first clears what killed prepares left (:func:`_tidy`). Arrays are
written into preallocated files (:func:`_new_array`), after the free space was checked against
the bytes to write (:func:`_check_space`); a write failing for a full disk or a read-only folder
becomes one line (:func:`_os_error`).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pebench.datasets.cache_errors import CacheError
from pebench.datasets.cache_manifest import _reused
from pebench.datasets.sources import SourceSplit
from pebench.fsio import LockHeldError, exclusive, fsync_dir

_SIZE_DIR = re.compile(r"^(\d+)px$")
#: work folders of a prepare next to ``<S>px``: ``.tmp-<S>px-*`` (being written) and
#: ``.old-<S>px-*`` (the replaced cache, between the two renames of :func:`_install`)
_LITTER = re.compile(r"^\.(tmp|old)-(\d+px)-")
_LOCK = ".lock"
#: bytes of a ``.npy`` header (numpy pads it to 64-byte multiples; 128 for these shapes)
_NPY_HEADER = 256
#: room kept for the manifest: a base plus some per split (class counts, notes)
_MANIFEST_BYTES, _MANIFEST_PER_SPLIT = 64 * 1024, 16 * 1024
#: errors meaning "the disk is full" (or the file-size limit is reached)
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


# ------------------------------------------------------------- install, lock, litter --
def _old_copy(path: Path) -> Path | None:
    """The cache inside an ``.old-*`` folder (this version's layout, or ``x/`` of older ones)."""
    for folder in (path, path / "x"):
        if (folder / "manifest.json").is_file():
            return folder
    return None


def _old_copies(final: Path) -> list[Path]:
    """Complete caches set aside from ``final`` by an install, newest first."""
    try:
        entries = list(final.parent.iterdir())
    except OSError:
        return []
    found = []
    for p in entries:
        m = _LITTER.match(p.name)
        if m and m[1] == "old" and m[2] == final.name and (c := _old_copy(p)) is not None:
            try:
                found.append((c.stat().st_mtime_ns, c))
            except OSError:
                continue  # removed meanwhile (the install finished)
    return [c for _, c in sorted(found, reverse=True)]


def _installed(final: Path) -> Path:
    """Where readers find the cache ``final``: itself, or the old copy an install set aside.

    :func:`_install` renames the old cache out of the way, then the new one into place; between
    the two renames (or after a prepare was killed there) the old copy is the cache.
    """
    if final.is_dir():
        return final
    olds = _old_copies(final)
    return final if not olds or final.is_dir() else olds[0]


def _sizes(unit_dir: Path) -> list[str]:
    """Prepared size folders (``"224px"``...) of a unit, smallest first.

    A size whose folder is set aside by an install (:func:`_installed`) counts too.
    """
    if not unit_dir.is_dir():
        return []
    found = {p.name for p in unit_dir.iterdir() if _SIZE_DIR.match(p.name)}
    for p in unit_dir.iterdir():
        if (m := _LITTER.match(p.name)) and m[1] == "old" and _old_copy(p) is not None:
            found.add(m[2])
    return sorted(found, key=lambda n: int(n[:-2]))


def _install(tmp: Path, final: Path) -> None:
    """Swap a finished folder into place; readers find the old or the new cache at every instant.

    The old cache is renamed to ``.old-<S>px-<pid>-<random>``, then the new one to ``<S>px``
    (each rename is atomic), then the old copy is removed. Readers fall back to the old copy
    between the renames (:func:`_installed`); a prepare killed there leaves it for the next
    prepare to put back (:func:`_tidy`).
    """
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{os.getpid()}-{secrets.token_hex(4)}"
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _tidy(unit_dir: Path) -> None:
    """Clear what killed prepares left in a unit folder (the caller holds the unit's lock).

    An ``.old-<S>px-*`` copy whose ``<S>px`` is missing is put back (the prepare died between
    the two renames of :func:`_install`); every other ``.tmp-*`` / ``.old-*`` folder is
    removed. No live prepare owns one: they all hold the lock.
    """
    for entry in sorted(unit_dir.iterdir()):
        m = _LITTER.match(entry.name)
        if m is None:
            continue
        final = unit_dir / m[2]
        if m[1] == "old" and not final.exists() and (olds := _old_copies(final)):
            os.replace(olds[0], final)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


@contextmanager
def _unit_lock(unit_dir: Path, unit: str) -> Iterator[OSError | None]:
    """Hold ``<unit_dir>/.lock`` (:func:`pebench.fsio.exclusive`) while one prepare writes a unit.

    Yields ``None`` once locked, or the error saying why the folder cannot be written (a
    read-only cache: only an up-to-date check is possible). A second prepare of the unit is
    refused while the lock is held, not queued. The lock file is removed on release; an acquirer
    checks that the file it locked is still the one in the folder, so the removal never admits
    two holders. A killed holder's lock is released by the kernel, and its file reused by the
    next prepare.

    Raises:
        CacheError: another process holds the lock, or the disk is full.
    """
    path = unit_dir / _LOCK
    with ExitStack() as held:
        while True:
            try:
                unit_dir.mkdir(parents=True, exist_ok=True)
                held.enter_context(exclusive(path, wait=False))
                break
            except FileNotFoundError:
                continue  # a failed first prepare removed the empty folder meanwhile
            except LockHeldError:
                raise CacheError(
                    f"{unit}: another pebench prepare is writing {unit_dir} (it holds {path}); "
                    f"wait for it to finish, then run this again"
                ) from None
            except OSError as err:
                if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                    yield err
                    return
                if (mapped := _os_error(err, unit, unit_dir, None)) is err:
                    raise
                raise mapped from err
        yield None


# ------------------------------------------------------------------- durable writes --
def _fsync_files(path: Path) -> None:
    """Fsync every file directly inside ``path`` (their data, before the folder is renamed)."""
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def _new_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    out = []
    while not folder.exists() and folder.parent != folder:
        out.append(folder)
        folder = folder.parent
    return out


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders a failed prepare created, deepest first, as long as they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _new_array(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A uint8 ``.npy`` file of ``shape`` with every data block allocated, memory-mapped.

    The blocks are reserved (``posix_fallocate``) before the map is written through, so a full
    disk is an ``OSError`` (``ENOSPC``) here and never a ``SIGBUS`` in the middle of a write.
    """
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False}
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {**header, "shape": shape})
        offset = fh.tell()
        size = offset + int(np.prod(shape))
        _preallocate(fh, size)
    return np.memmap(path, dtype=np.uint8, mode="r+", offset=offset, shape=shape)


def _preallocate(fh: Any, size: int) -> None:
    """Allocate ``size`` bytes of an open file (writes zeros where ``fallocate`` is missing)."""
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fh.fileno(), 0, size)
            return
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
    fh.seek(0, os.SEEK_END)
    zeros = bytes(1 << 20)
    while (left := size - fh.tell()) > 0:
        fh.write(zeros[:left])
    fh.flush()


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# ------------------------------------------------------- disk space, write errors --
def _split_bytes(n: int, image_size: int) -> int:
    """Disk bytes of one stored split of ``n`` examples (images, labels, digests)."""
    return 3 * _NPY_HEADER + n * (image_size * image_size * 3 + 8 + 16)


def _check_space(
    unit: str, folder: Path, lists: dict[str, SourceSplit], old: dict | None, image_size: int
) -> tuple[int, int]:
    """Bytes a prepare will write into ``folder`` and bytes free there, checked before writing.

    Reused splits are hard links (no space); the manifest gets a generous allowance.

    Raises:
        CacheError: fewer bytes free than needed (names the folder and both numbers).
    """
    todo = [len(sl.labels) for name, sl in lists.items() if not _reused(old, name, sl)]
    need = sum(_split_bytes(n, image_size) for n in todo)
    need += _MANIFEST_BYTES + _MANIFEST_PER_SPLIT * len(lists)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise CacheError(
            f"{unit}: not enough disk space in {folder}: the cache needs {need:,} bytes, "
            f"{free:,} are free; free some space or choose another --cache-dir"
        )
    return need, free


def _os_error(err: OSError, unit: str, folder: Path, space: tuple[int, int] | None) -> Exception:
    """One-line error for a failed write into ``folder`` (``err`` itself if not a disk problem)."""
    if err.errno in _FULL:
        sizes = f"; it needs about {space[0]:,} bytes, {space[1]:,} were free" if space else ""
        return CacheError(
            f"{unit}: writing the cache in {folder} failed: {err.strerror}{sizes}; nothing was "
            f"kept: free some space or choose another --cache-dir"
        )
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CacheError(
            f"{unit}: cannot write the cache in {folder} ({err.strerror}); choose another "
            f"--cache-dir"
        )
    return err
