"""The result-row schema, run identity and parsing (no torch import, no file layout).

One run is one row: identity, metrics, provenance and outcome, as raw numbers only (accuracies as
fractions in [0, 1], counts as ints, bytes, seconds); formatting belongs to the leaderboard
renderer. Where rows live (one CSV per run, with its record beside it) is
:class:`pebench.store.RunStore`'s business; how files are written is :mod:`pebench.fsio`'s. This
module says what a valid row is: its columns and their kinds, which of them make its identity
(:func:`run_id`), and how a CSV row is parsed and checked (:func:`parse_row`,
:func:`parse_csv`).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import math
import os
import stat
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
    #: hash of the method's source files (:func:`pebench.method_source.method_source`)
    "method_source": "str",
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
    #: search trials: which replicate of its trial (0 .. R-1; empty in rows before replicates)
    "replicate": "count",
    # metrics
    "test_top1": "frac",
    "val_top1": "frac",
    # what the score counts: examples scored and correct (finals: test; search trials: val)
    "n_test": "count",
    "n_test_correct": "count",
    "n_val": "count",
    "n_val_correct": "count",
    # selection (final rows): the grid the trial was chosen from and where in it it lies
    "selection_grid": "str",
    "selection_edge": "str",
    #: the budget's selection rule (:data:`pebench.selection.RULES`; empty: ``max``)
    "selection_rule": "str",
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
    # how the speed was measured: steady state (epochs 1..), the first epoch's one-off costs,
    # which splits were copied to the device once, how many runs could share the device
    "train_images_per_s_steady": "float",
    "first_epoch_s": "float",
    "data_resident": "str",
    "device_runs": "count",
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
    #: SHA-256 of the run's record (per-image predictions, per-epoch values); "" when none
    "record_sha256": "str",
    # outcome
    #: executions of this run since its last final outcome, this one included (empty in rows
    #: written before the column); drivers sharing a folder count retries with it
    "attempt": "count",
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
    "n_test",
    "n_test_correct",
    "n_val",
    "n_val_correct",
    "record_sha256",
    "train_images_per_s_steady",
    "first_epoch_s",
    "data_resident",
    "device_runs",
    "replicate",
    "method_source",
    "attempt",
    "selection_rule",
)
PHASES = ("search", "final")
#: ``blocked``: finals not run because a search trial of their task has no final outcome
STATUSES = ("ok", "diverged", "oom", "failed", "timeout", "blocked")
#: statuses that are final outcomes: a rerun of the same command skips them
DONE_STATUSES = ("ok", "diverged")
#: what makes two runs the same run. ``data_manifest`` (the prepared data's lineage, known before
#: the run) identifies the data; ``data_hash`` (the arrays the run read) is recorded by the run.
#: ``method_source`` identifies the method's code: an edited plugin's runs are new runs.
IDENTITY = (
    "phase",
    "trial",
    "lr",
    "weight_decay",
    "method",
    "method_config",
    "method_source",
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


def executions(row: Mapping[str, Any] | None) -> int:
    """Executions a run's ``row`` counts since its last final outcome (0: none, or a final one).

    A row written before the ``attempt`` column counts one execution.
    """
    if row is None or row["status"] in DONE_STATUSES:
        return 0
    return row["attempt"] or 1


class ResultsError(PebenchError, ValueError):
    """A malformed result file; the message names the file, the row and the column."""


def run_id(identity: Mapping[str, Any]) -> str:
    """Stable 16-hex-digit id of a run from its identity fields (see :data:`IDENTITY`)."""
    missing = [k for k in IDENTITY if k not in identity]
    if missing:
        raise KeyError(f"run identity lacks {missing}")
    blob = json.dumps({k: identity[k] for k in IDENTITY}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


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


def row_csv(row: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Validate ``row`` (as it will read back) and serialise it: ``(parsed row, CSV text)``.

    Raises:
        ResultsError: a value outside its column's kind, or a column outside the schema.
    """
    parsed = parse_row({k: _fmt(row.get(k)) for k in COLUMNS}, source="<new row>", line=1)
    return parsed, rows_to_csv([row])


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
    for split in ("test", "val"):
        n, k = out[f"n_{split}"], out[f"n_{split}_correct"]
        if (n is None) != (k is None) or (n is not None and (k > n or n == 0)):
            raise ResultsError(
                f"{source}, line {line}: n_{split}={n}, n_{split}_correct={k} (both or neither, "
                "0 <= correct <= n, n > 0)"
            )
    n, k = out["n_test" if out["phase"] == "final" else "n_val"], None
    if n is not None:
        k = out["n_test_correct" if out["phase"] == "final" else "n_val_correct"]
        if out[score] != k / n:
            raise ResultsError(
                f"{source}, line {line}: {score}={out[score]!r} is not {k}/{n} correct"
            )
    return out


def parse_csv(text: str, source: str) -> list[dict[str, Any]]:
    """Parse and validate every row of one result CSV's text (``source`` names it in errors)."""
    try:
        reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))  # a BOM is fine
        if reader.fieldnames is None:
            raise ResultsError(f"{source}: empty file (no header)")
        rows = []
        for i, raw in enumerate(reader, start=2):
            if None in raw:
                raise ResultsError(f"{source}, line {i}: row has more fields than the header")
            rows.append(parse_row(raw, source=source, line=i))
    except csv.Error as err:
        raise ResultsError(f"{source}: not a result CSV ({err})") from None
    return rows


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate every row of one result CSV file."""
    path = Path(path)
    try:  # never follow a link at the file itself (its target's text would reach the errors),
        # never wait on a FIFO: opened non-blocking, then refused unless a regular file
        fd = os.open(
            path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        )
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ResultsError(
                f"{path}: a symbolic link; result files must be regular files"
            ) from None
        raise ResultsError(f"{path}: unreadable ({err.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ResultsError(
                f"{path}: not a regular file (a FIFO, device or folder); result files must be"
                " regular files"
            )
        data = fh.read()
    try:
        text = data.decode("utf-8-sig")  # a BOM (spreadsheet export) is fine
    except UnicodeDecodeError as err:
        raise ResultsError(f"{path}: unreadable ({err})") from err
    return parse_csv(text, str(path))
