"""``pebench submit``: one archive holding everything a maintainer needs to verify a sweep.

What it holds (names inside the archive; every member's size and SHA-256 are in its manifest):

- each run's row and record at their paths in a results folder
  (:func:`pebench.store.run_files`): every row of the sweep (each task's
  search trials and the finals of the trial they select) with its per-image predictions, the
  files exactly as the results folder holds them;
- ``source/...``: the method's source files, exactly the ``(name, content)`` pairs its
  ``method_source`` hashes (:func:`pebench.method_source.source_files`); the manifest's
  ``source`` maps each member to its name in the hash;
- ``budget.json`` (the budget's values) and, for a budget file, ``budget/<file>`` itself;
- ``data.json``: each task's data format and prepared-data manifest hash;
- ``conformance.json``: the checks the rows record and the conformance memo of the sweep;
- ``environment.json``: Python, torch, timm and pebench versions, platform, the rows' devices,
  and every installed distribution (``pip freeze``);
- ``card.md``: the method, its paper, parameter counts and the suite table with intervals.

The manifest's ``meta`` names the sweep (method, preset, ``--set`` values, tasks, budget, seeds,
backbone, weights) and its code (``method_source``, ``method_origin``). A sweep that is not
complete (a search trial without a final outcome, a task whose finals are missing, blocked or
failed, rows run with ``--skip-checks``) is refused in one line naming what is missing.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pebench
from pebench.checks_field import SKIPPED
from pebench.errors import PebenchError
from pebench.method_source import source_files, source_hash
from pebench.store import run_files
from pebench.submission.archive import write_archive
from pebench.submission.card import card
from pebench.sweep.plan import Sweep
from pebench.sweep.status import grid_rows, other_code

#: what the manifest's ``meta["kind"]`` says
KIND = "pebench-submission"
#: where in the archive each kind of source file goes
SOURCE_DIR = "source"


class SubmissionError(PebenchError):
    """A sweep that cannot be submitted, or a submission that does not verify (one line)."""


def source_member(name: str) -> str:
    """The archive member of a source file named ``name`` in the hash (``dist:a/b.py`` ...)."""
    kind, sep, path = name.partition(":")
    return f"{SOURCE_DIR}/{kind}/{path}" if sep else f"{SOURCE_DIR}/module/{name}"


def sweep_rows(sweep: Sweep) -> list[dict[str, Any]]:
    """Every row of ``sweep`` (search trials, then the selected finals, per task).

    Raises:
        SubmissionError: naming the first thing missing (and how many more there are).
    """
    problems, rows = [], []
    for state, row in grid_rows(sweep):  # the grid as pebench status walks it
        if state.state == "done":
            rows.append(row)
        elif state.phase == "search":
            problems.append(f"{state.task}: search trial {state.trial} has no final outcome")
        elif state.trial == -1:  # a placeholder: no trial to retrain
            problems.append(f"{state.task}: no search trial finished ok")
        elif state.run_id:  # (finals not nameable yet follow an open trial, named above)
            problems.append(f"{state.task}: the final of seed {state.seed} is "
                            f"{state.status or 'missing'}")  # fmt: skip
    skipped = sum(r["checks"] == SKIPPED for r in rows)
    if skipped:
        problems.append(f"{skipped} rows were run with --skip-checks (checks=skipped)")
    if problems:
        other = other_code([sweep])
        hint = (
            f"; {sum(o['rows'] for o in other)} rows of {sweep.method} in {sweep.results_dir} "
            "come from other code (method_source "
            + ", ".join(o["source"] or "(not recorded)" for o in other)
            + f"), not the current {sweep.static['method_source']}"
            if other
            else ""
        )
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SubmissionError(
            f"cannot submit {sweep.method}: {problems[0]}{more}{hint}; a submission is a complete "
            "sweep: finish it with the same `pebench run` options"
        )
    return rows


def versions() -> dict[str, str]:
    """Python, torch, timm and pebench versions here (what a bit-identical re-run needs)."""

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return ""

    return {
        "python": platform.python_version(),
        "torch": version("torch"),
        "timm": version("timm"),
        "pebench": pebench.__version__,
    }


def environment(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The submitter's environment: versions, platform, the rows' devices, installed packages."""
    freeze = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()})
    return {
        **versions(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "devices": sorted({r["device"] for r in rows}),
        "pip_freeze": freeze,
    }


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True) + "\n").encode("utf-8")


def members_of(sweep: Sweep, budget_file: Path | None = None) -> tuple[dict[str, bytes], dict]:
    """The archive's members and its manifest's meta for a complete ``sweep``.

    Raises:
        SubmissionError: an incomplete sweep (:func:`sweep_rows`).
    """
    rows = sweep_rows(sweep)
    store = sweep.store
    members: dict[str, bytes] = {}
    for row in rows:
        rid = row["run_id"]
        row_file, record_file = run_files(rid)
        members[row_file] = store.row_path(rid).read_bytes()
        if row["record_sha256"]:
            members[record_file] = store.record_path(rid).read_bytes()
    files = source_files(sweep.method)
    source = {source_member(name): name for name, _ in files}
    members.update({source_member(name): content for name, content in files})
    members["budget.json"] = _json(sweep.budget.as_dict())
    if budget_file is not None:
        members[f"budget/{budget_file.name}"] = budget_file.read_bytes()
    members["data.json"] = _json({t: list(v) for t, v in sweep.data.items()})
    memo = store.read_memo(sweep.method) if store.memo_path(sweep.method).exists() else None
    checks = sorted({r["checks"] for r in rows})
    members["conformance.json"] = _json({"rows": checks, "memo": memo})
    members["environment.json"] = _json(environment(rows))
    members["card.md"] = card(sweep, rows).encode("utf-8")
    meta = {
        "kind": KIND,
        "method": sweep.method,
        "preset": sweep.preset,
        "overrides": {k: str(v) for k, v in sweep.overrides.items()},
        "tasks": [t.name for t in sweep.tasks],
        "budget": sweep.budget.id,
        "budget_file": f"budget/{budget_file.name}" if budget_file is not None else "",
        "seeds": list(sweep.seeds),
        "backbone": sweep.backbone,
        "weights": sweep.weights,
        "weights_tag": sweep.static["weights"],
        "method_source": sweep.static["method_source"],
        "method_origin": sweep.static["method_origin"],
        "source": source,
        "runs": len(rows),
        "pebench_version": pebench.__version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if source_hash(files) != meta["method_source"]:  # the code changed while submitting
        raise SubmissionError(f"{sweep.method}: its source files changed while being read")
    return members, meta


def submit(sweep: Sweep, out: str | Path, budget_file: str | Path | None = None) -> str:
    """Write the submission of ``sweep`` to ``out``; returns the archive's SHA-256.

    Raises:
        SubmissionError: an incomplete sweep, or weights given as a local file (the verifier
            could not load the same file).
    """
    if sweep.weights not in (None, "random"):
        raise SubmissionError(
            f"--weights {sweep.weights}: a submission uses the budget's weights (or 'random'), "
            "which a maintainer can load the same way"
        )
    members, meta = members_of(sweep, Path(budget_file) if budget_file else None)
    return write_archive(out, members, meta)


__all__ = [
    "KIND",
    "SubmissionError",
    "environment",
    "members_of",
    "source_member",
    "submit",
    "versions",
]
