"""Verified submissions: which of them a leaderboard shows, and why the others are left out.

``pebench verify FILE --out DIR`` writes one folder per submission, ``DIR/<name>/``, holding its
``verification.json`` (the verdict, the archive, the verifier's versions, the SHA-256 of every
submitted row and record) and the submitted rows in ``<results>/runs/``. A leaderboard built
with ``--submissions DIR`` reads each such folder as one more results folder (its rows are their
own leaderboard rows, never averaged with another folder's) when, and only when:

* ``verification.json`` is well-formed and says ``"verdict": "verified"``;
* its ``results`` is a plain relative path inside the submission's folder;
* ``<results>/runs/`` holds exactly the row and record files the verification lists, each with
  the SHA-256 it lists (a row edited, added or removed since is not what was verified).

Anything else is listed with its verdict and reason, and its rows enter no table: one bad
submission never blocks the leaderboard. Hidden entries (``.name``) and files directly in
``DIR`` are ignored, as are the other folders of a submission (``rerun/``, ``venv/``...).
``verification.json`` is read as data only, at most :data:`MAX_BYTES`: nothing in a submission
is imported or run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pebench.record import RecordError
from pebench.report.aggregate import check_lineage
from pebench.results import ResultsError
from pebench.store import RECORD_SUFFIX, ROW_SUFFIX, RunStore

#: the file ``pebench verify`` writes in each submission's folder
VERIFICATION = "verification.json"
#: the largest ``verification.json`` read
MAX_BYTES = 4 * 1024 * 1024
#: the ``format`` this reader knows
FORMAT = 1
VERDICTS = ("verified", "failed", "unverified")
#: marks a leaderboard row of a verified submission (the verification is named in a footnote)
VERIFIED = "✓"
#: the verdict of a submission whose verification cannot be relied on (missing, malformed...)
UNVERIFIED = "unverified"
NO_VERIFICATION = f"no {VERIFICATION}: run pebench verify"
#: a reason is cut to this many characters
REASON_WIDTH = 300
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: a listed row or record file: a plain file name in ``runs/``
_ROW_FILE = re.compile(rf"[A-Za-z0-9_.-]+(?:{re.escape(RECORD_SUFFIX)}|{re.escape(ROW_SUFFIX)})")


@dataclass(frozen=True)
class Submission:
    """One folder of a submissions folder, judged.

    Attributes:
        name: the folder's name.
        verdict: ``verified`` when shown; otherwise the verification's own verdict
            (``failed``, ``unverified``), or ``unverified`` when it cannot be relied on.
        reason: why it is not shown ("" when it is).
        results: its results folder (``DIR/<name>/<results>``) when shown, else None.
        method: the method verified.
        archive: the archive's file name.
        archive_sha256: the archive's SHA-256.
        verifier: what verified it (``pebench``, ``python``, ``torch``, ``device``...).
        reruns: how many sampled runs were re-run.
        identical: how many of those re-ran bit-identical.
        rows: the submitted rows, read and validated (shown submissions only).

    """

    name: str
    verdict: str
    reason: str = ""
    results: Path | None = None
    method: str = ""
    archive: str = ""
    archive_sha256: str = ""
    verifier: Mapping[str, str] = field(default_factory=dict)
    reruns: int = 0
    identical: int = 0
    rows: tuple[dict[str, Any], ...] = field(default=(), repr=False, compare=False)

    @property
    def shown(self) -> bool:
        """Whether its rows join the leaderboard."""
        return self.verdict == "verified" and self.results is not None

    @property
    def note(self) -> str:
        """What the footnote says of it: method, archive, re-runs and the verifier's versions."""
        v = self.verifier
        return (
            f"verified submission: {self.method} (archive {self.archive} sha256 "
            f"{self.archive_sha256[:12]}…, {self.identical} of {self.reruns} sampled runs re-run "
            f"bit-identical), verified with pebench {v['pebench']}, Python {v['python']}, "
            f"torch {v['torch']}, {v['device']}"
        )


class _Refused(Exception):
    """A submission that is not shown: its verdict and the reason (internal)."""

    def __init__(self, reason: str, verdict: str = UNVERIFIED) -> None:
        super().__init__(reason)
        self.reason = reason
        self.verdict = verdict


def read_submissions(folder: str | Path) -> list[Submission]:
    """Every submission under ``folder`` (one per direct subfolder), judged, sorted by name.

    Args:
        folder: the submissions folder (``pebench verify --out``).

    Returns:
        One :class:`Submission` per non-hidden subfolder; a malformed or missing verification
        is a submission that is not shown, never an error.

    Raises:
        ResultsError: ``folder`` is not a folder (one line).

    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ResultsError(
            f"no submissions folder {folder} (pass the folder `pebench verify --out` wrote)"
        )
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [judge(p) for p in subs]


def judge(sub: Path) -> Submission:
    """Judge one submission's folder (see the module docstring)."""
    name = " ".join(sub.name.split())
    try:
        return _judge(sub, name)
    except _Refused as no:
        return Submission(name, no.verdict, _one_line(no.reason))
    except OSError as err:  # a file or folder of it that cannot be read
        where = Path(err.filename).name if err.filename else sub.name
        return Submission(name, UNVERIFIED, _one_line(f"{where} unreadable ({err.strerror})"))


def _one_line(reason: str) -> str:
    """``reason`` on one line, at most :data:`REASON_WIDTH` characters."""
    reason = " ".join(reason.split())
    return reason if len(reason) <= REASON_WIDTH else reason[: REASON_WIDTH - 3] + "..."


def _judge(sub: Path, name: str) -> Submission:
    meta = _load(sub / VERIFICATION)
    if meta["format"] != FORMAT or isinstance(meta["format"], bool):
        raise _Refused(f"{VERIFICATION}: format {meta['format']!r} is not {FORMAT}")
    verdict, reason = meta["verdict"], meta["reason"]
    if verdict not in VERDICTS or not isinstance(reason, str):
        raise _Refused(f"{VERIFICATION}: verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
    if verdict != "verified":
        raise _Refused(reason or "no reason given", verdict)
    archive = _field(meta, "archive", dict)
    verifier = _field(meta, "verifier", dict)
    reruns = _field(meta, "reruns", list)
    sha = _field(archive, "sha256", str)
    if not _SHA256.fullmatch(sha):
        raise _Refused(f"{VERIFICATION}: archive sha256 is not 64 lowercase hex digits")
    if not all(isinstance(r, dict) and isinstance(r.get("identical"), bool) for r in reruns):
        raise _Refused(f"{VERIFICATION}: reruns: each needs a true/false 'identical'")
    results = sub / _relative(_field(meta, "results", str))
    rows = _check_rows(results, _field(meta, "rows", dict))
    return Submission(
        name=name,
        verdict=verdict,
        results=results,
        method=_field(meta, "method", str),
        archive=_field(archive, "name", str),
        archive_sha256=sha,
        verifier={k: _field(verifier, k, str) for k in ("pebench", "python", "torch", "device")},
        reruns=len(reruns),
        identical=sum(r["identical"] for r in reruns),
        rows=rows,
    )


def _load(path: Path) -> dict[str, Any]:
    """``verification.json`` as data, at most :data:`MAX_BYTES`, keys unique."""
    if not path.is_file():  # also no fifo or device to block or stream on
        raise _Refused(NO_VERIFICATION)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise _Refused(f"{VERIFICATION} unreadable ({err.strerror})") from None
    if len(data) > MAX_BYTES:
        raise _Refused(f"{VERIFICATION} is larger than {MAX_BYTES // 2**20} MiB")
    try:
        meta = json.loads(
            data.decode("utf-8"), object_pairs_hook=_unique, parse_constant=_no_constant
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise _Refused(f"{VERIFICATION} is not valid UTF-8 JSON ({err})") from None
    if not isinstance(meta, dict):
        raise _Refused(f"{VERIFICATION} is not a JSON object")
    for key in ("format", "verdict", "reason"):
        if key not in meta:
            raise _Refused(f"{VERIFICATION}: no {key!r}")
    return meta


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:  # which one counts would depend on the reader
            raise ValueError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _field(meta: Mapping[str, Any], key: str, kind: type) -> Any:
    """``meta[key]`` when it is a ``kind`` (a non-empty one for strings)."""
    value = meta.get(key)
    if not isinstance(value, kind) or (kind is str and not value):
        raise _Refused(f"{VERIFICATION}: {key!r} is missing or not a {kind.__name__}")
    return value


def _relative(results: str) -> Path:
    """``results`` as a path inside the submission's folder, or refused."""
    parts = results.split("/")
    if (
        not results.isprintable()
        or "\\" in results
        or re.match(r"[A-Za-z]:", results)
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise _Refused(
            f"{VERIFICATION}: results {results!r} is not a plain relative path inside the "
            "submission's folder"
        )
    return Path(*parts)


def _check_rows(results: Path, rows: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    """The rows under ``results/runs``, when they are exactly the ones verified."""
    if not any(isinstance(n, str) and n.endswith(ROW_SUFFIX) for n in rows):
        raise _Refused(f"{VERIFICATION}: 'rows' lists no row file")
    for name, sha in rows.items():
        if not _ROW_FILE.fullmatch(name) or not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise _Refused(f"{VERIFICATION}: rows: {name!r} is not a row file with its sha256")
    store = RunStore(results)
    if not store.exists():
        raise _Refused(f"no folder {store.runs.name}/ in the submission's results folder")
    for name in sorted(rows):
        path = store.runs / name
        if not path.is_file():
            raise _Refused(f"rows changed since verification: {name} (missing)")
        with path.open("rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() != rows[name]:
                raise _Refused(f"rows changed since verification: {name} (edited)")
    present = {p.name for p in store.runs.iterdir() if _is_row_file(p.name)}
    if added := sorted(present - set(rows)):
        raise _Refused(f"rows changed since verification: {added[0]} (added)")
    try:
        read = tuple(store.rows())
        for row in read:  # the report reads them too: one that cannot be read is refused here
            store.load_record(row)
    except (ResultsError, RecordError) as err:
        raise _Refused(f"a row cannot be read: {err}") from None
    return read


def _is_row_file(name: str) -> bool:
    return name.endswith(ROW_SUFFIX) or name.endswith(RECORD_SUFFIX)


def screen(subs: Sequence[Submission], rows: Sequence[Mapping[str, Any]]) -> list[Submission]:
    """``subs``, a shown one whose rows disagree with ``rows`` (or an earlier one's) refused.

    Rows that name the same prepared data but read other arrays are refused by the report
    (:func:`~pebench.report.aggregate.check_lineage`); here such a submission is left out with
    the reason instead, so the other rows are still shown.

    Args:
        subs: the submissions, as :func:`read_submissions` returns them.
        rows: the rows of the results folders read besides the submissions.

    Returns:
        The submissions, in order.

    """
    kept = list(rows)
    out = []
    for s in subs:
        if s.shown:
            try:
                check_lineage([*kept, *s.rows])
            except ResultsError as err:
                s = dataclasses.replace(
                    s, verdict=UNVERIFIED, reason=_one_line(str(err)), results=None
                )
            else:
                kept += s.rows
        out.append(s)
    return out


__all__ = [
    "MAX_BYTES",
    "NO_VERIFICATION",
    "VERIFICATION",
    "VERIFIED",
    "Submission",
    "judge",
    "read_submissions",
    "screen",
]
