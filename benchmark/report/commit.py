"""Write a set of files as one unit: after a kill or a full disk, the old set or the new one.

The leaderboard's outputs (``results.csv``, the figures, ``leaderboard.md``) live at fixed paths
in different folders, so no single rename can swap them. A write journal in the output folder
(``home``) makes the set one unit instead. One writer at a time per ``home`` (an ``flock`` on
the folder); each write:

1. :func:`recover`: completes or undoes a write that a kill interrupted (its journal) and
   deletes the temp files killed writes left behind (``.<name>.<random>.tmp``, this module's and
   those of older pebench versions);
2. writes the journal in state ``writing``: the temp files about to be written;
3. writes every new file to a temp file next to its target, and fsyncs it;
4. writes the journal in state ``commit`` (an atomic rename): **the commit point**;
5. renames every temp file onto its target and deletes the files the new set no longer has;
6. deletes the journal.

A kill before step 4 leaves the previous set (and temp files the next write or check deletes);
a kill after it leaves a journal that the next write or check completes. Whenever the folder
holds a mix of old and new files (during step 5 only), the journal is beside it, and every
pebench command that reads the outputs recovers first. An ``OSError`` while writing (a full
disk, a read-only folder) undoes steps 2-3 and raises :class:`WriteError`: nothing changed.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pebench.errors import PebenchError
from pebench.fsio import fsync_dir, write_all

try:  # POSIX; elsewhere writers are not serialised
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: the journal's file name inside ``home``
JOURNAL = ".pebench-write.json"
TMP_SUFFIX = ".tmp"
_FORMAT = 1


class WriteError(PebenchError):
    """The outputs could not be written; the previous set is unchanged."""


def _hidden(name: str) -> str:
    return name if name.startswith(".") else f".{name}"


def tmp_pattern(name: str) -> str:
    """The glob of the temp files of a target named ``name`` (``.<name>.<random>.tmp``)."""
    return f"{_hidden(name)}.*{TMP_SUFFIX}"


def _tmp_path(target: Path) -> Path:
    return target.with_name(f"{_hidden(target.name)}.{secrets.token_hex(6)}{TMP_SUFFIX}")


def _write_file(path: Path, data: bytes) -> None:
    """Create ``path`` (never an existing file or link) with ``data``, fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@contextmanager
def locked(home: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the folder ``home`` (one writer at a time)."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(home, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_journal(home: Path, journal: Mapping[str, Any]) -> None:
    """Replace the journal atomically (temp file, fsync, rename, fsync the folder)."""
    path = home / JOURNAL
    tmp = _tmp_path(path)
    try:
        _write_file(tmp, json.dumps(journal, indent=1).encode())
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    fsync_dir(home)


def _read_journal(home: Path) -> dict[str, Any] | None:
    """The journal, or None when there is none (or it is not one of ours)."""
    try:
        journal = json.loads((home / JOURNAL).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"state": "writing", "files": [], "remove": []}  # unreadable: nothing to finish
    ok = (
        isinstance(journal, dict)
        and journal.get("state") in ("writing", "commit")
        and all(isinstance(p, list) and len(p) == 2 for p in journal.get("files", []))
    )
    return journal if ok else {"state": "writing", "files": [], "remove": []}


def _apply(home: Path, journal: Mapping[str, Any]) -> None:
    """Steps 5-6: rename the temp files onto their targets, delete, drop the journal."""
    folders = set()
    for tmp, target in journal["files"]:
        if os.path.lexists(tmp):
            os.replace(tmp, target)
        folders.add(Path(target).parent)
    for path in journal.get("remove", []):
        _unlink(path)
        folders.add(Path(path).parent)
    for folder in sorted(folders):
        fsync_dir(folder)
    _unlink(home / JOURNAL)
    fsync_dir(home)


def _undo(home: Path, journal: Mapping[str, Any], made: Iterable[Path] = ()) -> None:
    """Delete the temp files of an unfinished write, its journal and the folders it made."""
    for tmp, _ in journal["files"]:
        _unlink(tmp)
    _unlink(home / JOURNAL)
    for folder in sorted(made, key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass


def _sweep(litter: Iterable[tuple[Path, str]]) -> None:
    """Delete temp files left by killed writes: ``(folder, glob)`` pairs."""
    for folder, pattern in litter:
        if folder.is_dir():
            for path in sorted(folder.glob(pattern)):
                _unlink(path)


def _recover_locked(home: Path, litter: Iterable[tuple[Path, str]]) -> None:
    journal = _read_journal(home)
    if journal is not None:
        if journal["state"] == "commit":
            _apply(home, journal)
        else:
            _undo(home, journal)
    _sweep([(home, tmp_pattern(JOURNAL)), *litter])


def recover(home: str | Path, litter: Iterable[tuple[Path, str]] = ()) -> None:
    """Finish or undo a write a kill interrupted, and delete the temp files it left.

    Args:
        home: the output folder (holds the journal while a write is in progress).
        litter: more ``(folder, glob)`` pairs of temp files to delete (see :func:`tmp_pattern`).

    Raises:
        WriteError: the interrupted write could not be completed (e.g. a read-only folder).

    """
    home = Path(home)
    if not home.is_dir():
        return
    try:
        with locked(home):
            _recover_locked(home, litter)
    except OSError as err:
        raise WriteError(
            f"cannot complete an interrupted leaderboard write in {home} ({_reason(err)})"
        ) from err


def _reason(err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return "no space left on device"
    return err.strerror or str(err)


def _makedirs(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for f in reversed(missing):
        f.mkdir()
    return list(reversed(missing))


def write_unit(
    home: str | Path,
    files: Mapping[Path, bytes],
    remove: Iterable[Path] = (),
    litter: Iterable[tuple[Path, str]] = (),
) -> None:
    """Replace ``files`` and delete ``remove`` as one unit (see the module docstring).

    Args:
        home: the output folder (must exist): holds the journal during the write.
        files: target path -> new content.
        remove: files the new set no longer has (deleted with the commit).
        litter: ``(folder, glob)`` pairs of temp files killed writes may have left there.

    Raises:
        WriteError: an ``OSError`` (a full disk, a read-only folder...) before the commit point:
            nothing changed, no temp file left.

    """
    home = Path(os.path.abspath(home))
    targets = [Path(os.path.abspath(t)) for t in files]
    journal: dict[str, Any] = {
        "format": _FORMAT,
        "state": "writing",
        "files": [[str(_tmp_path(t)), str(t)] for t in targets],
        "remove": [str(Path(os.path.abspath(r))) for r in remove],
    }
    litter = [*litter, *((t.parent, tmp_pattern(t.name)) for t in targets)]
    made: list[Path] = []
    current = home / JOURNAL
    try:
        with locked(home):
            _recover_locked(home, litter)
            try:
                _write_journal(home, journal)
                for (tmp, target), data in zip(journal["files"], files.values(), strict=True):
                    current = Path(target)
                    made += _makedirs(current.parent)
                    _write_file(Path(tmp), data)
                for folder in sorted({t.parent for t in targets}):
                    fsync_dir(folder)
                current = home / JOURNAL
                journal["state"] = "commit"
                _write_journal(home, journal)
            except BaseException:
                _undo(home, journal, made)
                raise
            _apply(home, journal)
    except OSError as err:
        committed = (home / JOURNAL).exists() and journal["state"] == "commit"
        if committed:
            raise WriteError(
                f"writing {current}: {_reason(err)}; the new leaderboard is committed but not "
                "in place: the next `pebench leaderboard` completes it"
            ) from err
        raise WriteError(
            f"cannot write {current} ({_reason(err)}): nothing changed, the previous "
            "leaderboard, results.csv and plots are kept"
        ) from err
