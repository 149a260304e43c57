"""Write a set of files as one unit: after a kill or a full disk, the old set or the new one.

The leaderboard's outputs (``results.csv``, the figures, ``leaderboard.md``) live at fixed paths
in different folders, so no single rename can swap them. A write journal in the output folder
(``home``) makes the set one unit instead. One writer at a time per ``home`` (a lock file in
the folder, :data:`LOCK`, there only while a write holds it); each write:

1. :func:`recover`: completes or undoes a write that a kill interrupted (its journal) and
   deletes the temp files killed writes left behind (``.<name>.<random>.tmp``, this module's and
   those of older pebench versions);
2. writes the journal in state ``writing``: the temp files about to be written;
3. writes every new file to a temp file next to its target, and fsyncs it;
4. writes the journal in state ``commit`` (an atomic rename): **the commit point**;
5. renames every temp file onto its target and deletes the files the new set no longer has;
6. deletes the journal.

A kill before step 4 leaves the previous set (and temp files the next write deletes); a kill
after it leaves a journal that the next write completes. Whenever the folder holds a mix of old
and new files (during step 5 only), the journal is beside it. An ``OSError`` while writing (a
full disk, a read-only folder) undoes steps 2-3 and raises :class:`WriteError`: nothing changed.

The journal is data a results folder may carry from anywhere (a collaborator's tarball, a shared
cluster folder), so it is never trusted: its paths are relative to ``home`` (never to the
current folder), and before anything is renamed or deleted every path it names must be one of
the outputs the caller is about to write (``allowed``), and every temp file must sit next to its
target under this module's temp-name pattern. Anything else is refused in one line and nothing
is touched. Checking a leaderboard (``--check``) never recovers.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pebench.errors import PebenchError
from pebench.fsio import exclusive, fsync_dir, write_all

#: the journal's file name inside ``home``
JOURNAL = ".pebench-write.json"
#: the lock file of the writer in ``home`` (:func:`locked`), there only while one writes
LOCK = ".pebench-write.lock"
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


def _is_tmp_of(tmp: Path, target: Path) -> bool:
    """Whether ``tmp`` is a temp file :func:`_tmp_path` names for ``target``."""
    pattern = re.escape(_hidden(target.name)) + r"\.[0-9a-f]{12}" + re.escape(TMP_SUFFIX)
    return tmp.parent == target.parent and re.fullmatch(pattern, tmp.name) is not None


#: which files a write may replace or delete (absolute, normalised paths)
Allowed = Callable[[Path], bool]


def inside(home: Path) -> Allowed:
    """The default :data:`Allowed`: regular names inside ``home`` (no link out of it)."""
    root = Path(os.path.realpath(home))

    def allowed(path: Path) -> bool:
        return Path(os.path.realpath(path)).is_relative_to(root)

    return allowed


def _rel(path: Path, home: Path) -> str:
    return os.path.relpath(path, home)


def _abs(rel: Any, home: Path) -> Path:
    if not isinstance(rel, str) or os.path.isabs(rel):
        raise ValueError(f"{rel!r} is not a path relative to the output folder")
    return Path(os.path.normpath(home / rel))


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
    """Hold the writer's lock of the folder ``home`` (one writer at a time; others wait).

    The lock file :data:`LOCK` (:func:`pebench.fsio.exclusive`, a ``filelock.FileLock``) is in
    ``home`` while a write holds it, and gone after.
    """
    with exclusive(home / LOCK, wait=True):
        yield


def _on_disk(journal: Mapping[str, Any], home: Path) -> dict[str, Any]:
    """The journal as written: paths relative to ``home``."""
    return {
        "format": _FORMAT,
        "state": journal["state"],
        "files": [[_rel(tmp, home), _rel(target, home)] for tmp, target in journal["files"]],
        "remove": [_rel(p, home) for p in journal["remove"]],
    }


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


def _refuse(home: Path, why: str) -> WriteError:
    return WriteError(
        f"refusing the leaderboard write journal {home / JOURNAL}: {why}; nothing was touched "
        "(delete that file if no pebench leaderboard of yours was interrupted there)"
    )


def _read_journal(home: Path, allowed: Allowed) -> dict[str, Any] | None:
    """The journal with absolute paths, or None when there is none.

    Raises:
        WriteError: a journal that is not one pebench wrote for these outputs (malformed, a path
            outside them, a temp file not of the expected name next to its target).
    """
    path = home / JOURNAL
    try:
        if path.is_symlink() or not path.is_file():
            raise _refuse(home, "it is not a regular file") if path.exists() else FileNotFoundError
        if path.stat().st_size > 1_000_000:
            raise _refuse(home, "it is larger than a journal can be")
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError):
        raise _refuse(home, "it is not readable JSON") from None
    ok = (
        isinstance(raw, dict)
        and raw.get("format") == _FORMAT
        and raw.get("state") in ("writing", "commit")
        and isinstance(raw.get("files"), list)
        and all(isinstance(p, list) and len(p) == 2 for p in raw["files"])
        and isinstance(raw.get("remove", []), list)
    )
    if not ok:
        raise _refuse(home, f"it is not a journal of format {_FORMAT}")
    try:
        files = [(_abs(tmp, home), _abs(target, home)) for tmp, target in raw["files"]]
        remove = [_abs(p, home) for p in raw.get("remove", [])]
    except ValueError as err:
        raise _refuse(home, str(err)) from None
    for tmp, target in files:
        if not allowed(target):
            raise _refuse(home, f"it names {target}, which this leaderboard does not write")
        if not _is_tmp_of(tmp, target):
            raise _refuse(home, f"{tmp} is not a temp file of {target.name} next to it")
    for p in remove:
        if not allowed(p):
            raise _refuse(home, f"it would delete {p}, which this leaderboard does not write")
    return {"state": raw["state"], "files": files, "remove": remove}


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


def _undo(home: Path, journal: Mapping[str, Any]) -> None:
    """Delete the temp files of an unfinished write and its journal."""
    for tmp, _ in journal["files"]:
        _unlink(tmp)
    _unlink(home / JOURNAL)


def _remove_folders(made: Iterable[Path]) -> None:
    """Delete the folders an unfinished write made (those still empty), deepest first."""
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


def _recover_locked(home: Path, litter: Iterable[tuple[Path, str]], allowed: Allowed) -> None:
    journal = _read_journal(home, allowed)
    if journal is not None:
        if journal["state"] == "commit":
            _apply(home, journal)
        else:
            _undo(home, journal)
    _sweep([(home, tmp_pattern(JOURNAL)), *litter])


def recover(
    home: str | Path, litter: Iterable[tuple[Path, str]] = (), allowed: Allowed | None = None
) -> None:
    """Finish or undo a write a kill interrupted, and delete the temp files it left.

    Args:
        home: the output folder (holds the journal while a write is in progress).
        litter: more ``(folder, glob)`` pairs of temp files to delete (see :func:`tmp_pattern`).
        allowed: which files the journal may name (default: inside ``home``).

    Raises:
        WriteError: the interrupted write could not be completed (e.g. a read-only folder), or
            the journal is not one pebench wrote for these outputs (nothing touched).

    """
    home = Path(os.path.abspath(home))
    if not home.is_dir():
        return
    try:
        with locked(home):
            _recover_locked(home, litter, allowed or inside(home))
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
    allowed: Allowed | None = None,
) -> None:
    """Replace ``files`` and delete ``remove`` as one unit (see the module docstring).

    Args:
        home: the output folder (created if missing): holds the journal during the write.
        files: target path -> new content.
        remove: files the new set no longer has (deleted with the commit).
        litter: ``(folder, glob)`` pairs of temp files killed writes may have left there.
        allowed: which files an interrupted earlier write's journal may name (default: inside
            ``home``); this write's own files must be allowed too.

    Raises:
        WriteError: an ``OSError`` (a full disk, a read-only folder...) before the commit point:
            nothing changed, no temp file left; or a journal found there that is not one pebench
            wrote for these outputs (nothing touched).

    """
    home = Path(os.path.abspath(home))
    allowed = allowed or inside(home)
    targets = [Path(os.path.abspath(t)) for t in files]
    removed = [Path(os.path.abspath(r)) for r in remove]
    if bad := [p for p in [*targets, *removed] if not allowed(p)]:
        raise WriteError(f"refusing to write {bad[0]}: not one of the outputs of {home}")
    pairs = [(_tmp_path(t), t) for t in targets]
    journal: dict[str, Any] = {"state": "writing", "files": pairs, "remove": removed}
    litter = [*litter, *((t.parent, tmp_pattern(t.name)) for t in targets)]
    made: list[Path] = []
    current = home / JOURNAL
    try:
        made += _makedirs(home)  # a new output folder: removed again if the write fails
        try:
            with locked(home):
                _recover_locked(home, litter, allowed)
                try:
                    _write_journal(home, _on_disk(journal, home))
                    for (tmp, target), data in zip(journal["files"], files.values(), strict=True):
                        current = target
                        made += _makedirs(current.parent)
                        _write_file(tmp, data)
                    for folder in sorted({t.parent for t in targets}):
                        fsync_dir(folder)
                    current = home / JOURNAL
                    journal["state"] = "commit"
                    _write_journal(home, _on_disk(journal, home))
                except BaseException:
                    _undo(home, journal)
                    raise
                _apply(home, journal)
        except BaseException:
            _remove_folders(made)  # the empty ones, after the lock: its file has left ``home``
            raise
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
