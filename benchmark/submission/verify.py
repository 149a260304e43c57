"""``pebench verify FILE``: run :mod:`pebench.submission.checks` and record what they found.

Everything is written under the work folder ``<out>/<archive name>/`` and nowhere else:

- ``verification.json`` (:data:`RECORD`): the verdict (``verified``, ``failed`` or
  ``unverified``) and its reason, the archive's hash, the steps passed, the re-runs compared,
  the verifier's environment, and the hash of every submitted row file;
- ``results/``: the submitted rows and records, as submitted (written only once the
  archive, its rows, code, budget and data checked out): what ``pebench leaderboard
  --submissions`` shows when, and only when, the verdict is ``verified``;
- ``rerun/``: the re-runs (their rows, records and logs), ``venv/`` with ``--install``.

Submitted code is never imported by this process: it runs only in the re-runs, in the
environment ``--install`` makes (or, for a plugin already installed here with the same
``method_source``, in this one), after the maintainer has read ``source/`` in the archive.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pebench import fsio
from pebench.errors import PebenchError
from pebench.report.submissions import VERIFICATION as RECORD
from pebench.store import RunStore, file_of_run
from pebench.submission import checks as C
from pebench.submission.archive import read_archive
from pebench.submission.bundle import SubmissionError
from pebench.submission.install import make_env

FORMAT = 1


def work_folder(out: str | Path, archive: str | Path) -> Path:
    """``<out>/<archive name without .tar.gz>``."""
    name = Path(archive).name
    for suffix in (".tar.gz", ".tgz"):
        name = name.removesuffix(suffix)
    return Path(out) / name


def _fresh(work: Path) -> None:
    """Empty ``work`` for a new verification (only a folder a verification wrote is emptied)."""
    if work.exists():
        if not (work / RECORD).is_file():
            raise SubmissionError(
                f"{work} exists and is not a verification folder (no {RECORD}); pass another --out"
            )
        shutil.rmtree(work)
    work.mkdir(parents=True)


def _interpreter(meta: dict, files: list, work: Path, install: bool) -> tuple[str | None, str]:
    """The Python the re-runs use (a fresh environment with ``install``), or ``(None, why not)``."""
    from pebench.method_source import method_source

    if install and meta["method_origin"] != "builtin":
        return str(make_env(work / "venv", dict(files))), ""
    try:
        here = method_source(meta["method"])
    except PebenchError:
        here = ""
    if here == meta["method_source"]:
        return sys.executable, ""
    if meta["method_origin"] == "builtin":
        return None, (
            f"pebench's {meta['method']} here is code {here}, the submission's "
            f"{meta['method_source']} (another pebench version)"
        )
    what = f"installed here as code {here}" if here else "not installed here"
    return None, (
        f"method {meta['method']!r} is {what}, the submission's is code "
        f"{meta['method_source']}: read its source/ in the archive, then pass --install"
    )


def _replay(python: str, request: dict, work: Path, fresh_env: bool) -> dict[str, Any]:
    """Run :mod:`pebench.submission.replay` with ``python``; its answer."""
    path = work / "replay-request.json"
    request = request | {"answer": str(work / "replay-answer.json")}
    path.write_text(json.dumps(request), encoding="utf-8")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if fresh_env:  # nothing of the verifier's own path settings: the environment's packages only
        env.pop("PYTHONPATH", None)
    cmd = [python, "-m", "pebench.submission.replay", str(path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"the re-run process exited {done.returncode}: {tail}"}
    return json.loads(Path(request["answer"]).read_text(encoding="utf-8"))


def _record(work: Path, body: dict[str, Any]) -> None:
    data = (json.dumps(body, indent=1, sort_keys=True) + "\n").encode("utf-8")
    fsio.atomic_write_bytes(work / RECORD, data)


def verify(
    archive: str | Path,
    out: str | Path = "submissions",
    sample_k: int = 5,
    seed: int = 0,
    data_dir: str | None = None,
    install: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Verify ``archive``; returns the record written to ``<work>/verification.json``.

    Raises:
        pebench.submission.archive.ArchiveError: an unsafe or damaged archive (nothing written).
        SubmissionError: a submission that does not check out (its rows, code, budget or data);
            the record, verdict ``failed``, is written first.
    """
    arc = read_archive(archive)
    work = work_folder(out, archive).absolute()
    _fresh(work)
    meta = arc.meta
    body: dict[str, Any] = {
        "format": FORMAT,
        "verdict": "failed",
        "reason": "",
        "archive": {"name": Path(archive).name, "sha256": arc.sha256},
        **{k: meta.get(k) for k in ("method", "method_source", "method_origin", "budget")},
        "tasks": meta.get("tasks"),
        "results": "results",
        "rows": {},
        "verifier": C.environment(),
        "steps": [],
        "reruns": [],
        "sample": {"k": sample_k, "seed": seed},
        "verified_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _record(work, body | {"reason": "the verification did not finish"})  # until it does
    try:
        rows = C.check_rows(arc)
        body["steps"].append(f"rows: {len(rows)} rows, ids, records and identity")
        files = C.check_source(arc)
        body["steps"].append(f"source: {len(files)} files hash to {meta['method_source']}")
        budget = C.check_budget(arc, work)
        body["steps"].append(f"budget: {meta['budget']}")
        C.check_data(arc, rows, data_dir)
        body["steps"].append(f"data: {len(meta['tasks'])} tasks match the data prepared here")
    except PebenchError as err:
        body["reason"] = str(err).splitlines()[0]
        _record(work, body)
        raise SubmissionError(body["reason"]) from None
    submitted = RunStore(work / "results")
    for name, content in arc.members.items():
        if file_of_run(name):  # the rows and records, at their place in a results folder
            (submitted.root / name).parent.mkdir(parents=True, exist_ok=True)
            (submitted.root / name).write_bytes(content)
            body["rows"][Path(name).name] = hashlib.sha256(content).hexdigest()
    python, why = _interpreter(meta, files, work, install)
    if python is None:
        body.update(verdict="unverified", reason=why)
        _record(work, body)
        return body
    picked = C.sample(rows, sample_k, seed)
    request = {
        **{k: meta[k] for k in ("method", "preset", "overrides", "tasks", "seeds", "backbone")},
        "weights": meta["weights"],
        "budget": budget,
        "data_dir": os.path.abspath(data_dir) if data_dir else None,
        "rerun": str(work / "rerun"),
        "submitted": str(work / "results"),
        "sample": picked,
    }
    say(f"pebench verify: re-running {len(picked)} of {len(rows)} runs (seed {seed})")
    answer = _replay(python, request, work, fresh_env=python != sys.executable)
    body["reason"] = _grid_problem(answer, meta, rows)
    if not body["reason"]:
        body["steps"].append("conformance checks passed; the grid's run ids are the submitted")
        rerun = RunStore(work / "rerun")
        body["reruns"] = [C.compare(r, rows[r], rows, submitted, rerun) for r in picked]
        bad = [r for r in body["reruns"] if not r["ok"]]
        if bad:
            body["reason"] = f"run {bad[0]['run_id']} does not reproduce ({_what(bad[0])})"
        body["verdict"] = "failed" if bad else "verified"
    _record(work, body)
    return body


def _grid_problem(answer: dict, meta: dict, rows: dict) -> str:
    """What the re-run process found wrong before re-running, or ``""``."""
    if answer.get("error"):
        return f"re-running the sweep: {answer['error']}"
    if answer["method_source"] != meta["method_source"]:
        return (
            f"the installed code hashes to {answer['method_source']}, the submission's to "
            f"{meta['method_source']}"
        )
    grid, got = set(answer["grid"]), set(rows)
    if extra := sorted(got - grid):
        return f"run {extra[0]} is not a run of the sweep the submission names"
    if missing := sorted(grid - got):
        return f"run {missing[0]} of the sweep is not submitted"
    return ""


def _what(r: dict[str, Any]) -> str:
    if r.get("detail"):
        return r["detail"]
    if r.get("bit_identical_expected"):
        return f"predictions differ; scores {r['submitted']} vs {r['rerun']}"
    return f"scores {r['submitted']} vs {r['rerun']}, tolerance {r['tolerance']:.4f}"


def table(body: dict[str, Any]) -> str:
    """The verdict and one line per re-run, as printed by ``pebench verify``."""
    lines = [
        f"{'run':<17}{'phase':<7}{'task':<22}{'seed':>5}{'submitted':>11}{'re-run':>9}  result"
    ]
    for r in body["reruns"]:
        rerun = "-" if r["rerun"] is None else f"{r['rerun']:.4f}"
        if r["identical"]:
            result = "identical predictions"
        else:
            result = ("within " if r["ok"] else "OUTSIDE ") + f"±{r.get('tolerance', 0):.4f}"
        lines.append(
            f"{r['run_id']:<17}{r['phase']:<7}{r['task']:<22}{r['seed']:>5}"
            f"{r['submitted']:>11.4f}{rerun:>9}  {result}"
        )
    lines += [f"checked: {s}" for s in body["steps"]]
    reason = f": {body['reason']}" if body["reason"] else ""
    lines.append(f"verdict: {body['verdict']}{reason}")
    return "\n".join(lines)


__all__ = ["FORMAT", "RECORD", "table", "verify", "work_folder"]
