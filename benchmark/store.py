"""The run store: the one owner of a results folder's layout, shaped like a worker's protocol.

A worker's trip through the store is: is the run :meth:`~RunStore.finished`? :meth:`~RunStore.claim`
its slot (a marker naming the worker), :meth:`~RunStore.discard` an old unfinished row,
:meth:`~RunStore.record` the row with its record (per-image predictions, epochs), and
:meth:`~RunStore.release` the slot. Planning asks what is :meth:`~RunStore.recorded` and
:meth:`~RunStore.retire` s runs a new selection or ``--rerun`` makes obsolete; the report reads
:meth:`~RunStore.rows` and :meth:`~RunStore.load_record`. No other module knows the layout::

    <results>/
      runs/<run_id>.csv               one row per run (the commit point of a run)
      runs/<run_id>.record.json       its record (pebench.record), written before the row
      runs/<run_id>.state.safetensors its tunable state, with --keep-state (before the row)
      runs/<run_id>.running           the marker of the worker executing it (pebench.markers)
      runs/.<run_id>.ddp/             a DDP run's spec and rank 0's outcome, while it trains
      runs/stale/                     finals another selection made obsolete (never read)
      runs/replaced/<UTC time>/       rows ``--rerun`` set aside (never read), and its
                                      rerun.json: the grid and when the rerun began
      logs/<run_id>.log, .epochs.csv  what a run reported while it trained
      tensorboard/<run_id>/, wandb/   trackers (``--log-to``)
      checks/<method>.json            the conformance memo (local state, not committed)

A row and its record are one unit: the record is written first and the row names its SHA-256,
so a kill leaves both or neither (a record without its row is an orphan that :meth:`tidy`
removes, or moves after its row when a retirement was interrupted), and a row whose record is
missing or differs is refused when read. Every write goes through :mod:`pebench.fsio`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pebench import fsio, markers
from pebench import record as REC
from pebench import results as R

RUNS, LOGS, CHECKS = "runs", "logs", "checks"
STALE, REPLACED = "stale", "replaced"
ROW_SUFFIX, RECORD_SUFFIX, MARKER_SUFFIX = ".csv", ".record.json", ".running"
STATE_SUFFIX = ".state.safetensors"
DDP_SUFFIX = ".ddp"
#: a ``--rerun``'s journal, in its ``replaced/<UTC time>/`` folder
RERUN_JOURNAL = "rerun.json"
#: the row files of the committed reference results, as generated text names them
REFERENCE_ROWS = f"results/{RUNS}/*{ROW_SUFFIX}"

Row = dict[str, Any]


class ResultsFullError(fsio.DiskFullError):
    """A sweep stopped because its results folder is full (what was recorded is kept)."""

    def __init__(self, results_dir: str | Path, code: int, recorded: int) -> None:
        super().__init__(results_dir, code)
        self.recorded = recorded

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.errno, self.recorded)

    def __str__(self) -> str:
        return (
            f"results folder {self.path} is full ({self.strerror}): {self.recorded} runs "
            "recorded, rerun the same command when there is space"
        )


@dataclass(frozen=True)
class LogPaths:
    """Where one run's log, epoch records and trackers go."""

    log: Path
    epochs: Path
    tensorboard: Path
    wandb: Path


def read_row_file(path: str | Path) -> Row:
    """The one row of a row file, named by its run id and matching its record.

    Raises:
        ResultsError: a malformed row, not exactly one row (a header-only file would lose the
            run silently, a repeated row would count it twice), another run's id, or a
            record that is missing or is not the one the row names.
    """
    path = Path(path)
    rows = R.read_csv(path)
    if len(rows) != 1:
        raise R.ResultsError(f"{path}: holds {len(rows)} rows; a run file holds exactly one")
    row = rows[0]
    if f"{row['run_id']}{ROW_SUFFIX}" != path.name:
        raise R.ResultsError(f"{path}: run_id {row['run_id']!r} does not match the file name")
    if row["record_sha256"]:
        rec = path.with_name(f"{row['run_id']}{RECORD_SUFFIX}")
        try:
            data = rec.read_bytes()
        except OSError:
            raise R.ResultsError(
                f"{path}: its record {rec.name} is missing (a row and its record are one "
                "unit: rerun the run, or restore both)"
            ) from None
        if REC.sha256(data) != row["record_sha256"]:
            raise R.ResultsError(
                f"{path}: its record {rec.name} is not the one the row names "
                "(record_sha256 differs): rerun the run, or restore both"
            )
    return row


class RunStore:
    """One results folder (see the module docstring for its layout).

    Args:
        root: the results folder (need not exist yet).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.runs = self.root / RUNS

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunStore) and self.root == other.root

    def __hash__(self) -> int:
        return hash(self.root)

    # ------------------------------------------------------------------------------ layout --
    def row_path(self, rid: str) -> Path:
        """Where the row of run ``rid`` lives."""
        return self.runs / f"{rid}{ROW_SUFFIX}"

    def record_path(self, rid: str) -> Path:
        """Where the record of run ``rid`` lives (beside its row)."""
        return self.runs / f"{rid}{RECORD_SUFFIX}"

    def state_path(self, rid: str) -> Path:
        """Where the tunable state of run ``rid`` is kept (``--keep-state``), beside its row."""
        return self.runs / f"{rid}{STATE_SUFFIX}"

    def keep_state(self, rid: str, state: bytes) -> None:
        """Keep run ``rid``'s tunable state, written before its row.

        A kill between the two leaves an orphan state that :meth:`tidy` removes.
        """
        fsio.atomic_write_bytes(self.state_path(rid), state)

    def marker_path(self, rid: str) -> Path:
        """``runs/<run_id>.running``: exists while a worker executes run ``rid``."""
        return self.runs / f"{rid}{MARKER_SUFFIX}"

    def ddp_dir(self, rid: str) -> Path:
        """The folder of a DDP run's training stage: its spec, then rank 0's outcome."""
        return self.runs / f".{rid}{DDP_SUFFIX}"

    def log_paths(self, rid: str) -> LogPaths:
        """Where run ``rid`` logs (see :class:`pebench.runlog.RunLog`)."""
        logs = self.root / LOGS
        return LogPaths(
            logs / f"{rid}.log",
            logs / f"{rid}.epochs.csv",
            self.root / "tensorboard" / rid,
            self.root / "wandb",
        )

    def memo_path(self, method: str) -> Path:
        """The conformance memo of ``method`` (local state, a hint: never a proof)."""
        return self.root / CHECKS / f"{method.replace(':', '_')}.json"

    def exists(self) -> bool:
        """Whether the folder holds a ``runs/`` folder (a mistyped path does not)."""
        return self.runs.is_dir()

    # ----------------------------------------------------------------------------- reading --
    def read(self, rid: str) -> Row | None:
        """The row of run ``rid``, ``None`` when there is none.

        Raises:
            ResultsError: the file exists but is not a valid row with its record.
        """
        path = self.row_path(rid)
        if not path.exists():
            return None
        return read_row_file(path)

    def finished(self, rid: str) -> Row | None:
        """The row of run ``rid`` if it exists with a final status (resume), else ``None``.

        A row that cannot be read (or whose record is missing) counts as not finished: the run
        is redone and overwrites it.
        """
        try:
            row = self.read(rid)
        except R.ResultsError:
            return None
        return row if row is not None and row["status"] in R.DONE_STATUSES else None

    def fresh(self, rid: str, since: float) -> Row | None:
        """The row of run ``rid`` if it was written at or after ``since`` (epoch seconds)."""
        try:
            if self.row_path(rid).stat().st_mtime < since:
                return None
            return self.read(rid)
        except (OSError, R.ResultsError):
            return None

    def rows(self, skipped: list[str] | None = None) -> list[Row]:
        """Every row under ``runs/`` (sorted by file name), validated with its record.

        Args:
            skipped: when given, a bad file is left out and its error appended here instead of
                raised (``pebench leaderboard --skip-bad``).

        Raises:
            ResultsError: the first bad file (unless ``skipped`` collects them).
        """
        out: list[Row] = []
        for path in sorted(self.runs.glob(f"*{ROW_SUFFIX}")):
            try:
                out.append(read_row_file(path))
            except R.ResultsError as err:
                if skipped is None:
                    raise
                skipped.append(str(err))
        return out

    def load_record(self, row: Row) -> REC.RunRecord | None:
        """The record of ``row`` (``None`` for a row without one), checked against the row.

        Raises:
            RecordError: the file is missing, malformed, or not the one the row names.
        """
        if not row.get("record_sha256"):
            return None
        path = self.record_path(row["run_id"])
        try:
            data = path.read_bytes()
        except OSError as err:
            raise REC.RecordError(f"{path}: unreadable ({err.strerror})") from None
        rec = REC.parse(data, str(path))
        REC.check_pair(row, rec, data, str(path))
        return rec

    def recorded(self, rids: Iterable[str]) -> list[str]:
        """The run ids among ``rids`` that have a row file (each once, in order)."""
        return [rid for rid in dict.fromkeys(rids) if self.row_path(rid).exists()]

    # ----------------------------------------------------------------------------- writing --
    def record(self, row: Row, record: REC.RunRecord | None = None) -> Row:
        """Write ``row`` (and its ``record`` first, named in the row); returns it as read back.

        The row is validated before anything is written. Without a record, the row's
        ``record_sha256`` is cleared (a failure row never claims one).

        Raises:
            ResultsError: the row is not valid (nothing written).
            DiskFullError: no space or quota (the row is as it was; a record written before the
                row failed is an orphan that :meth:`tidy` removes).
        """
        row = dict(row, record_sha256="")
        data = b""
        if record is not None:
            data = record.to_bytes()
            row.update(record.counts(), record_sha256=REC.sha256(data))
        parsed, text = R.row_csv(row)
        if record is not None:
            fsio.atomic_write_bytes(self.record_path(parsed["run_id"]), data, durable=False)
        fsio.atomic_write_text(self.row_path(parsed["run_id"]), text)
        return parsed

    def discard(self, rid: str) -> None:
        """Remove run ``rid``'s row and record (an unfinished row about to be redone)."""
        self.row_path(rid).unlink(missing_ok=True)
        self.record_path(rid).unlink(missing_ok=True)
        self.state_path(rid).unlink(missing_ok=True)

    def _move(self, rid: str, folder: Path) -> Path:
        """Move run ``rid``'s row, then its record and state, into ``folder``; the row's path."""
        dest = fsio.move(self.row_path(rid), folder / self.row_path(rid).name)
        for path in (self.record_path(rid), self.state_path(rid)):
            if path.exists():
                fsio.move(path, folder / path.name)
        return dest

    def retire(self, rids: Iterable[str]) -> list[Path]:
        """Move the rows of ``rids`` that exist to ``runs/stale/`` (kept, never read)."""
        return [self._move(rid, self.runs / STALE) for rid in self.recorded(rids)]

    def set_aside(self, rids: Iterable[str]) -> list[Path]:
        """Move the rows of ``rids`` that exist to ``runs/replaced/<UTC time>/``."""
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        return [self._move(rid, self.runs / REPLACED / stamp) for rid in self.recorded(rids)]

    # ----------------------------------------------------------------------------- reruns --
    def begin_rerun(self, rids: Iterable[str]) -> list[Path]:
        """Start a ``--rerun`` of the grid ``rids``: journal it, then set its rows aside.

        The journal (``replaced/<UTC time>/rerun.json``: the grid and the time it began) is
        written durably before any row moves, so a kill during the moves, or a Ctrl-C during the
        runs, leaves an unfinished rerun that the next run of the grid resumes
        (:meth:`resume_rerun`) instead of mixing old rows with new ones.
        """
        rids = list(dict.fromkeys(rids))
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        folder = self.runs / REPLACED / stamp
        folder.mkdir(parents=True, exist_ok=True)
        journal = {"started": time.time(), "rids": rids, "finished": None}
        fsio.atomic_write_bytes(folder / RERUN_JOURNAL, json.dumps(journal).encode())
        return [self._move(rid, folder) for rid in self.recorded(rids)]

    def pending_rerun(self, rids: Iterable[str]) -> tuple[Path, float] | None:
        """The unfinished ``--rerun`` of a grid sharing runs with ``rids``: (folder, start time)."""
        wanted = set(rids)
        for path in sorted((self.runs / REPLACED).glob(f"*/{RERUN_JOURNAL}"), reverse=True):
            try:
                journal = json.loads(path.read_bytes()[: 64 * 1024 * 1024])
                started, grid = float(journal["started"]), set(journal["rids"])
                finished = journal.get("finished")
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not a journal this code wrote: ignored, never acted on
            if finished is None and grid & wanted:
                return path.parent, started
        return None

    def resume_rerun(self, folder: Path, started: float, rids: Iterable[str]) -> list[Path]:
        """Set aside the rows of ``rids`` older than the rerun's start (a kill cut its moves).

        Rows written since it began are its fresh rows: kept.
        """
        old = [rid for rid in self.recorded(rids) if self.row_path(rid).stat().st_mtime < started]
        return [self._move(rid, folder) for rid in old]

    def finish_rerun(self, folder: Path) -> None:
        """Mark the ``--rerun`` journalled in ``folder`` finished (its grid ran to the end)."""
        path = folder / RERUN_JOURNAL
        journal = json.loads(path.read_bytes())
        journal["finished"] = time.time()
        fsio.atomic_write_bytes(path, json.dumps(journal).encode())

    # ----------------------------------------------------------------------------- markers --
    def claim(self, row: Row, timeout_s: float) -> dict[str, Any] | None:
        """Claim run ``row``'s slot (its marker); returns another live worker's marker instead.

        See :func:`pebench.markers.claim`.
        """
        text = markers.marker_text(row, timeout_s, None)
        return markers.claim(self.marker_path(row["run_id"]), text)

    def mark_started(self, row: Row, timeout_s: float, child: int) -> None:
        """Name the process executing the claimed run in its marker."""
        text = markers.marker_text(row, timeout_s, child)
        fsio.atomic_write_text(self.marker_path(row["run_id"]), text, durable=False)

    def release(self, rid: str) -> None:
        """Remove run ``rid``'s marker (its worker is done with it)."""
        self.marker_path(rid).unlink(missing_ok=True)

    def marker(self, rid: str) -> dict[str, Any] | None:
        """The marker of run ``rid`` (job id, host, pid, start time...), or ``None``."""
        return markers.read_marker(self.marker_path(rid))

    def running(self, rid: str) -> dict[str, Any] | None:
        """The marker of run ``rid`` if it may belong to a live worker, else ``None``."""
        marker = self.marker(rid)
        return marker if marker is not None and markers.marker_is_live(marker) else None

    def clear_stale(self, rid: str) -> bool:
        """Remove run ``rid``'s marker if its worker is gone (see :mod:`pebench.markers`)."""
        return markers.clear_stale(self.marker_path(rid))

    # ------------------------------------------------------------------------ housekeeping --
    def tidy(self) -> list[Path]:
        """Clear what killed writers left in ``runs/``; returns the paths removed or moved.

        Abandoned temp files (:func:`pebench.fsio.remove_stale_temps`), stale takeover locks, the
        folders of DDP runs killed while training (no live worker holds them), and
        orphan records: a record whose row is not in ``runs/`` and whose run no live worker
        holds is moved after its row when a retirement was interrupted between the two moves,
        else removed (its writer died before writing the row; a rerun writes it again); a kept
        state (``--keep-state``) likewise. Writes
        in progress are left alone.
        """
        if not self.runs.is_dir():
            return []
        done = fsio.remove_stale_temps(self.runs)
        done += markers.remove_stale_locks(self.runs)
        for folder in sorted(self.runs.glob(f".*{DDP_SUFFIX}")):  # a killed DDP run's stage
            rid = folder.name[1:].removesuffix(DDP_SUFFIX)
            if folder.is_dir() and not folder.is_symlink() and self.running(rid) is None:
                shutil.rmtree(folder, ignore_errors=True)
                done.append(folder)
        orphans = sorted(self.runs.glob(f"*{RECORD_SUFFIX}")) + sorted(
            self.runs.glob(f"*{STATE_SUFFIX}")
        )
        for rec in orphans:
            rid = rec.name.removesuffix(RECORD_SUFFIX).removesuffix(STATE_SUFFIX)
            if self.row_path(rid).exists() or self.running(rid) is not None:
                continue
            moved_rows = [self.runs / STALE / f"{rid}{ROW_SUFFIX}"]
            moved_rows += sorted((self.runs / REPLACED).glob(f"*/{rid}{ROW_SUFFIX}"))
            home = next(
                (p.parent for p in moved_rows if p.exists() and not (p.parent / rec.name).exists()),
                None,
            )
            with contextlib.suppress(OSError):
                if home is not None:
                    done.append(fsio.move(rec, home / rec.name))
                else:
                    rec.unlink()
                    done.append(rec)
        return done

    def drop_empty_logs(self, rid: str) -> None:
        """Remove the zero-byte log files of run ``rid`` (a run stopped without a row).

        What such a run left is empty files that the rerun rewrites.
        """
        paths = self.log_paths(rid)
        for path in (paths.log, paths.epochs):
            with contextlib.suppress(OSError):
                if path.is_file() and path.stat().st_size == 0:
                    path.unlink()

    # ------------------------------------------------------------------------------- memo --
    def read_memo(self, method: str) -> Any:
        """The conformance memo of ``method`` (``None`` when absent or unreadable)."""
        try:
            return json.loads(self.memo_path(method).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def write_memo(self, method: str, memo: Any) -> None:
        """Remember ``memo`` (JSON data) for ``method``."""
        fsio.atomic_write_text(self.memo_path(method), json.dumps(memo))


def run_files(rid: str) -> tuple[str, str]:
    """Run ``rid``'s row and record as paths relative to a results folder (POSIX)."""
    return f"{RUNS}/{rid}{ROW_SUFFIX}", f"{RUNS}/{rid}{RECORD_SUFFIX}"


def file_of_run(name: str) -> tuple[str, str] | None:
    """``(run id, "row" or "record")`` of a relative path :func:`run_files` names, else None."""
    folder, _, file = name.partition("/")
    if folder != RUNS or "/" in file:
        return None
    for suffix, kind in ((RECORD_SUFFIX, "record"), (ROW_SUFFIX, "row")):
        if file.endswith(suffix) and len(file) > len(suffix):
            return file.removesuffix(suffix), kind
    return None


def as_store(where: str | os.PathLike | RunStore) -> RunStore:
    """``where`` as a :class:`RunStore` (a path or a store)."""
    return where if isinstance(where, RunStore) else RunStore(where)


__all__ = [
    "LogPaths",
    "ResultsFullError",
    "RunStore",
    "as_store",
    "file_of_run",
    "read_row_file",
    "run_files",
]
