"""A run's record: its per-image predictions and per-epoch values, the row's side file.

Every run that scores a split writes, next to its row, one JSON file
(``runs/<run_id>.record.json``, placed by :class:`pebench.store.RunStore`) holding:

- ``split``: the split it scored (``val`` for search trials, ``test`` for finals: nothing about
  the test split ever reaches a search run);
- ``pred``: the predicted class of every example, in the prepared split's fixed order (index
  ``i`` is the same image for every run of a task with the same ``data_manifest``);
- ``correct``: ``"1"``/``"0"`` per example, whether ``pred`` equals its label (what paired
  per-image statistics need, without committing labels);
- ``epochs``: one record per epoch (train loss, learning rate, seconds; validation accuracy in
  search runs run with ``--epoch-val``).

The row names the file's SHA-256 (``record_sha256``) and its counts (``n_test`` and
``n_test_correct`` for finals, ``n_val`` and ``n_val_correct`` for search trials), so a row and
its record are one unit: a record that does not match its row is refused when read. Torch-free
and parsed as data only (JSON, size-capped): a record never runs code.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pebench.errors import PebenchError

FORMAT = 1
#: a record larger than this is refused unread (a 1M-image test split is ~8 MB)
MAX_BYTES = 64 * 1024 * 1024
#: the split a run of each phase scores
SPLIT_OF_PHASE = {"search": "val", "final": "test"}
#: the row's count columns per scored split: (examples, correct)
COUNT_COLUMNS = {"val": ("n_val", "n_val_correct"), "test": ("n_test", "n_test_correct")}
#: the row's score column per scored split: its value is the record's correct fraction
SCORE_COLUMN = {"val": "val_top1", "test": "test_top1"}
#: the fields of one epoch record, in order
EPOCH_FIELDS = ("epoch", "train_loss", "lr", "epoch_time_s", "data_time_s", "val_top1")


class RecordError(PebenchError, ValueError):
    """A malformed run record, or one that does not match its row; the message names it."""


@dataclass(frozen=True)
class RunRecord:
    """What a run scored, image by image, and how its epochs went.

    Attributes:
        run_id: the run it belongs to.
        split: ``val`` or ``test``.
        pred: predicted class per example, in split order.
        correct: whether each prediction equals its label, in split order.
        epochs: one mapping per epoch (:data:`EPOCH_FIELDS`; ``val_top1`` may be ``None``).
    """

    run_id: str
    split: str
    pred: tuple[int, ...]
    correct: tuple[bool, ...]
    epochs: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    @property
    def n(self) -> int:
        """Examples scored."""
        return len(self.pred)

    @property
    def n_correct(self) -> int:
        """Examples predicted correctly."""
        return sum(self.correct)

    def counts(self) -> dict[str, int]:
        """The row's count columns this record stands for (``n_test``, ``n_test_correct`` ...)."""
        n, k = COUNT_COLUMNS[self.split]
        return {n: self.n, k: self.n_correct}

    def to_bytes(self) -> bytes:
        """The file's bytes (compact JSON, one key per line for readable diffs)."""
        epochs = [{k: _finite(e.get(k)) for k in EPOCH_FIELDS if k in e} for e in self.epochs]
        body = {
            "format": FORMAT,
            "run_id": self.run_id,
            "split": self.split,
            "n": self.n,
            "pred": list(self.pred),
            "correct": "".join("1" if c else "0" for c in self.correct),
            "epochs": epochs,
        }
        lines = [
            f"{json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in body.items()
        ]
        return ("{\n" + ",\n".join(lines) + "\n}\n").encode("utf-8")


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def sha256(data: bytes) -> str:
    """The hex SHA-256 a row records for its record file."""
    return hashlib.sha256(data).hexdigest()


def make(
    run_id: str,
    phase: str,
    pred: Sequence[int],
    correct: Sequence[bool],
    epochs: Sequence[Mapping[str, Any]] = (),
) -> RunRecord:
    """The record of a run of ``phase`` (the split follows from the phase)."""
    if len(pred) != len(correct):
        raise RecordError(f"run {run_id}: {len(pred)} predictions but {len(correct)} flags")
    return RunRecord(
        run_id,
        SPLIT_OF_PHASE[phase],
        tuple(int(p) for p in pred),
        tuple(bool(c) for c in correct),
        tuple(dict(e) for e in epochs),
    )


def parse(data: bytes, source: str) -> RunRecord:
    """Parse a record file's bytes (data only: JSON).

    Raises:
        RecordError: naming ``source`` and what is wrong.
    """
    if len(data) > MAX_BYTES:
        raise RecordError(f"{source}: {len(data)} bytes, more than a record may hold ({MAX_BYTES})")
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise RecordError(f"{source}: not a run record ({type(err).__name__}: {err})") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise RecordError(f"{source}: not a run record of format {FORMAT}")
    pred, correct, epochs = body.get("pred"), body.get("correct"), body.get("epochs", [])
    ok = (
        isinstance(body.get("run_id"), str)
        and body.get("split") in COUNT_COLUMNS
        and isinstance(pred, list)
        and all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in pred)
        and isinstance(correct, str)
        and set(correct) <= {"0", "1"}
        and len(correct) == len(pred) == body.get("n")
        and isinstance(epochs, list)
        and all(isinstance(e, dict) for e in epochs)
    )
    if not ok:
        raise RecordError(
            f"{source}: malformed run record (expected run_id, split val|test, n, pred: "
            "n class indices, correct: n characters 0/1, epochs: a list of objects)"
        )
    return RunRecord(
        body["run_id"],
        body["split"],
        tuple(pred),
        tuple(c == "1" for c in correct),
        tuple(epochs),
    )


def check_pair(row: Mapping[str, Any], record: RunRecord, data: bytes, source: str) -> None:
    """Refuse a record that is not the one ``row`` names (hash, run, split, counts).

    Raises:
        RecordError: naming ``source`` and the first mismatch.
    """
    if sha256(data) != row["record_sha256"]:
        raise RecordError(f"{source}: its SHA-256 is not the record_sha256 of its row")
    if record.run_id != row["run_id"]:
        raise RecordError(f"{source}: belongs to run {record.run_id!r}, not {row['run_id']!r}")
    if record.split != SPLIT_OF_PHASE[row["phase"]]:
        raise RecordError(f"{source}: a {record.split} record for a {row['phase']} run")
    for col, value in record.counts().items():
        if row[col] is not None and row[col] != value:
            raise RecordError(f"{source}: {col} is {value} here and {row[col]} in its row")


__all__ = [
    "COUNT_COLUMNS",
    "EPOCH_FIELDS",
    "SPLIT_OF_PHASE",
    "RecordError",
    "RunRecord",
    "SCORE_COLUMN",
    "check_pair",
    "make",
    "parse",
    "sha256",
]
