"""The result-row schema, atomic writes, resume and validation (no torch import).

One run writes one CSV with one row to ``<results>/runs/<run_id>.csv``. Rows hold raw numbers
only (accuracies as fractions in [0, 1], counts as ints, bytes, seconds); formatting belongs to
the leaderboard renderer. A file appears only complete (temp file + ``os.replace``), so a crash or
kill never leaves a partial row, and concurrent writers never share a file. A temp file names its
writer (pid and host), so one left by a killed writer is recognised and removed
(:func:`remove_stale_temps`); a write that finds the disk full leaves no temp file and raises
:class:`DiskFullError` (one line, exit 2, at the CLI) instead of a chain of ``OSError`` tracebacks.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import math
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pebench.errors import PebenchError

# name -> kind: "str", "int", "count" (int, or empty when a run failed before counting),
# "float" (NaN allowed), "frac" (float in [0, 1] or NaN), "bool"
SCHEMA: dict[str, str] = {
    # identity
    "run_id": "str",
    "phase": "str",
    "trial": "int",
    "lr": "float",
    "weight_decay": "float",
    "method": "str",
    "preset": "str",
    "method_config": "str",
    "method_origin": "str",
    "method_reconstruction": "bool",
    "checks": "str",
    "backbone": "str",
    "weights": "str",
    "task": "str",
    "suite": "str",
    "task_group": "str",
    "task_version": "str",
    "data_format": "str",
    "data_hash": "str",
    "data_manifest": "str",
    "data_skipped": "count",
    "budget": "str",
    "seed": "int",
    # metrics
    "test_top1": "frac",
    "val_top1": "frac",
    # selection (final rows): the grid the trial was chosen from and where in it it lies
    "selection_grid": "str",
    "selection_edge": "str",
    "train_loss": "float",
    "params_method": "count",
    "params_head": "count",
    "params_backbone": "count",
    "params_inference_extra": "count",
    "flops_per_image": "float",
    "train_flops_per_image": "float",
    "peak_mem_bytes": "float",
    "peak_mem_kind": "str",
    "train_images_per_s": "float",
    "eval_images_per_s": "float",
    "train_time_s": "float",
    "data_time_s": "float",
    "mfu": "float",
    "compile": "str",
    "wall_time_s": "float",
    "checkpoint_bytes": "float",
    # provenance
    "created_at": "str",
    "pebench_version": "str",
    "git_sha": "str",
    "git_dirty": "bool",
    "python_version": "str",
    "torch_version": "str",
    "timm_version": "str",
    "device": "str",
    "executor": "str",
    "job_id": "str",
    "log_path": "str",
    # outcome
    "status": "str",
    "error": "str",
}
COLUMNS = list(SCHEMA)
#: columns added after the first release: a file written before them still reads (as "")
ADDED_COLUMNS = (
    "data_manifest",
    "data_skipped",
    "executor",
    "job_id",
    "log_path",
    "selection_grid",
    "selection_edge",
    "checks",
    "train_flops_per_image",
    "data_time_s",
    "mfu",
    "compile",
)
PHASES = ("search", "final")
#: ``blocked``: finals not run because a search trial of their task has no final outcome
STATUSES = ("ok", "diverged", "oom", "failed", "timeout", "blocked")
#: statuses that are final outcomes: a rerun of the same command skips them
DONE_STATUSES = ("ok", "diverged")
#: what makes two runs the same run. ``data_manifest`` (the prepared data's lineage, known before
#: the run) identifies the data; ``data_hash`` (the arrays the run read) is recorded by the run.
IDENTITY = (
    "phase",
    "trial",
    "lr",
    "weight_decay",
    "method",
    "method_config",
    "backbone",
    "weights",
    "task",
    "task_version",
    "data_format",
    "data_manifest",
    "budget",
    "seed",
    "pebench_version",
)


class ResultsError(PebenchError, ValueError):
    """A malformed result file; the message names the file, the row and the column."""


def run_id(identity: Mapping[str, Any]) -> str:
    """Stable 16-hex-digit id of a run from its identity fields (see :data:`IDENTITY`)."""
    missing = [k for k in IDENTITY if k not in identity]
    if missing:
        raise KeyError(f"run identity lacks {missing}")
    blob = json.dumps({k: identity[k] for k in IDENTITY}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_path(results_dir: str | Path, rid: str) -> Path:
    """Where the row of run ``rid`` lives."""
    return Path(results_dir) / "runs" / f"{rid}.csv"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


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


class ResultsFullError(DiskFullError):
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


def is_full(err: BaseException | None) -> bool:
    """Whether ``err`` is a write that failed for lack of space or quota."""
    return isinstance(err, OSError) and err.errno in FULL_ERRNOS


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())


def temp_prefix(path: str | Path) -> str:
    """The name prefix of a temp file written next to ``path``: ``.<name>.<pid>@<host>.``.

    Naming the writer lets :func:`temp_is_stale` tell a write in progress from one whose writer
    was killed (a zero-byte or partial leftover).
    """
    return f".{Path(path).name}.{os.getpid()}@{_host()}."


def temp_is_stale(path: str | Path, now: float | None = None) -> bool:
    """Whether temp file ``path`` is abandoned.

    Abandoned: its writer (named by :func:`temp_prefix`) is a dead process of this host, or it is
    older than :data:`TEMP_STALE_S` (a writer on another host, or a name without a writer).
    """
    path = Path(path)
    owner = _TEMP_OWNER.search(path.name)
    if owner is not None and owner.group(2) == _host() and int(owner.group(1)) != os.getpid():
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


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the abandoned temp files (:func:`temp_is_stale`) of ``folder``; returns them.

    Writes in progress (their writer alive, the file young) are left alone, so this is safe
    while other sweeps write into the same folder.
    """
    removed = []
    for path in sorted(Path(folder).glob(f".*{TEMP_SUFFIX}")):
        if path.is_dir() or not temp_is_stale(path):
            continue
        with contextlib.suppress(OSError):  # gone meanwhile, or another user's file
            path.unlink()
            removed.append(path)
    return removed


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the file descriptor ``fd`` (``os.write`` until done)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename).

    Raises:
        DiskFullError: no space or quota left; ``path`` is as it was and the temp file is gone.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=TEMP_SUFFIX)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~umask())  # as open() would create it: the user's umask rules
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(err, OSError) and is_full(err):
            raise DiskFullError(path, err.errno) from err
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def rows_to_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """Serialise rows with exactly :data:`COLUMNS` (unknown keys raise)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        extra = set(row) - set(COLUMNS)
        if extra:
            raise ResultsError(f"row has columns outside the schema: {sorted(extra)}")
        writer.writerow({k: _fmt(row.get(k)) for k in COLUMNS})
    return buf.getvalue()


def write_row(results_dir: str | Path, row: Mapping[str, Any]) -> Path:
    """Validate ``row`` and write it atomically to its own file; returns the path."""
    parsed = parse_row({k: _fmt(row.get(k)) for k in COLUMNS}, source="<new row>", line=1)
    path = run_path(results_dir, parsed["run_id"])
    atomic_write_text(path, rows_to_csv([row]))
    return path


def _parse_value(kind: str, raw: str) -> Any:
    if kind == "str":
        return raw
    if kind == "bool":
        if raw not in ("true", "false"):
            raise ValueError("expected true or false")
        return raw == "true"
    if kind == "int":
        return int(raw)
    if kind == "count":
        if raw == "":
            return None
        if int(raw) < 0:
            raise ValueError("expected a count >= 0")
        return int(raw)
    value = float(raw) if raw != "" else math.nan
    if math.isinf(value):
        raise ValueError("expected a finite number (or empty)")
    if kind == "frac" and not math.isnan(value) and not 0.0 <= value <= 1.0:
        raise ValueError("expected a fraction in [0, 1]")
    return value


def parse_row(raw: Mapping[str, str], source: str, line: int) -> dict[str, Any]:
    """Parse and check one CSV row.

    Raises:
        ResultsError: naming ``source``, the line and the offending column.
    """
    missing = sorted(set(COLUMNS) - set(raw) - set(ADDED_COLUMNS))
    extra = sorted(set(raw) - set(COLUMNS))
    if missing or extra:
        raise ResultsError(f"{source}: header mismatch: missing {missing}, unexpected {extra}")
    raw = {**dict.fromkeys(ADDED_COLUMNS, ""), **raw}
    out: dict[str, Any] = {}
    for col, kind in SCHEMA.items():
        value = raw[col]
        if value is None:
            raise ResultsError(f"{source}, line {line}: row is too short (no {col!r})")
        try:
            out[col] = _parse_value(kind, value)
        except ValueError as err:
            raise ResultsError(
                f"{source}, line {line}, column {col!r}: bad value {value!r} ({err})"
            ) from err
    if out["phase"] not in PHASES:
        raise ResultsError(f"{source}, line {line}: phase {out['phase']!r} not in {PHASES}")
    if out["status"] not in STATUSES:
        raise ResultsError(f"{source}, line {line}: status {out['status']!r} not in {STATUSES}")
    if not out["run_id"]:
        raise ResultsError(f"{source}, line {line}: empty run_id")
    score = "test_top1" if out["phase"] == "final" else "val_top1"
    if out["status"] == "ok" and math.isnan(out[score]):
        raise ResultsError(f"{source}, line {line}: an ok {out['phase']} run without {score}")
    return out


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate every row of one result CSV."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (spreadsheet export) is fine
    except (OSError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path}: unreadable ({err})") from err
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        raise ResultsError(f"{path}: empty file (no header)")
    rows = []
    for i, raw in enumerate(reader, start=2):
        if None in raw:
            raise ResultsError(f"{path}, line {i}: row has more fields than the header")
        rows.append(parse_row(raw, source=str(path), line=i))
    return rows


def read_run(path: str | Path) -> dict[str, Any]:
    """The one row of a run file ``<run_id>.csv`` (validated, and named by its run id).

    Raises:
        ResultsError: a malformed row, not exactly one row (a header-only file would lose the
            run silently, a repeated row would count it twice), or another run's id.
    """
    path = Path(path)
    rows = read_csv(path)
    if len(rows) != 1:
        raise ResultsError(f"{path}: holds {len(rows)} rows; a run file holds exactly one")
    if f"{rows[0]['run_id']}.csv" != path.name:
        raise ResultsError(f"{path}: run_id {rows[0]['run_id']!r} does not match the file name")
    return rows[0]


def read_runs(results_dir: str | Path, skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """All rows under ``<results_dir>/runs/`` (sorted by file name), validated.

    Args:
        results_dir: the results folder.
        skipped: when given, a bad file is left out and its error appended here instead of
            raised (``pebench leaderboard --skip-bad``).

    Raises:
        ResultsError: the first bad file (unless ``skipped`` collects them).
    """
    rows: list[dict[str, Any]] = []
    for path in sorted((Path(results_dir) / "runs").glob("*.csv")):
        try:
            rows.append(read_run(path))
        except ResultsError as err:
            if skipped is None:
                raise
            skipped.append(str(err))
    return rows


def finished(results_dir: str | Path, rid: str) -> dict[str, Any] | None:
    """The row of run ``rid`` if it exists with a final status (resume), else ``None``.

    A file that cannot be parsed counts as not finished (the run is redone and overwrites it).
    """
    path = run_path(results_dir, rid)
    if not path.exists():
        return None
    try:
        row = read_run(path)
    except ResultsError:
        return None
    return row if row["status"] in DONE_STATUSES else None
