"""The checks of ``pebench verify``: a submission against itself, the data here, a re-run sample.

In order, each step refusing in one line (:class:`SubmissionError`) before the next:

1. the archive (:func:`pebench.submission.archive.read_archive`: safe names, regular files, size
   caps, every member listed in the manifest with its hash; nothing is extracted);
2. its rows: each a valid row, named by its run id, whose identity hashes to that id, with its
   per-image record (the record's hash, counts and score agree with the row), all of the one
   sweep the manifest names (method, preset, code, budget, backbone, weights, tasks, seeds);
3. its code: the submitted source files hash to the rows' ``method_source``;
4. its budget: the budget file (or the built-in budget of that id here) has the values and id
   the rows name;
5. its data: each task's data format and manifest hash, as the rows and ``data.json`` name them,
   are those of the data prepared here (``--data-dir``);
6. the re-runs (:mod:`pebench.submission.replay`, in a fresh environment with ``--install``):
   the conformance checks pass, every submitted run is a run of the re-derived grid (and every
   run of the grid is submitted), and ``--sample K`` runs drawn with the verifier's ``--seed``
   (at least one search trial and one final) reproduce: bit for bit where the submitting and
   verifying environments match (CPU, same Python, torch and timm), else within a tolerance
   from the run's own noise (:func:`tolerance`).

The flow that runs them and writes what they found is :mod:`pebench.submission.verify`.
"""

from __future__ import annotations

import json
import math
import platform
import random
import statistics
from pathlib import Path
from typing import Any

from pebench import record as REC
from pebench import results as R
from pebench.method_source import source_hash
from pebench.store import RunStore, file_of_run, run_files
from pebench.submission.archive import Archive
from pebench.submission.bundle import KIND, SubmissionError, versions

#: the identity fields every row of one submission shares with its manifest
SHARED = {
    "method": "method",
    "preset": "preset",
    "method_source": "method_source",
    "method_origin": "method_origin",
    "budget": "budget",
    "backbone": "backbone",
    "weights": "weights_tag",
}
#: the chance that a genuine re-run outside a matching environment is refused (see tolerance)
ALPHA = 0.01


def environment() -> dict[str, str]:
    """The verifier's versions, device and platform (re-runs here run on the CPU)."""
    return {**versions(), "device": "cpu", "platform": f"{platform.system()}-{platform.machine()}"}


def _json_member(arc: Archive, name: str) -> Any:
    try:
        return json.loads(arc.members[name])
    except KeyError:
        raise SubmissionError(f"{arc.path}: member {name!r} missing") from None
    except ValueError as err:
        raise SubmissionError(f"{arc.path}: member {name!r} is not JSON ({err})") from None


def check_rows(arc: Archive) -> dict[str, dict[str, Any]]:
    """Step 2: the rows, their ids, records and shared identity. Returns run id -> row."""
    meta, rows = arc.meta, {}
    if meta.get("kind") != KIND:
        raise SubmissionError(f"{arc.path}: not a pebench submission (manifest kind)")
    files = {n: file_of_run(n) for n in arc.members}
    for name in sorted(n for n, f in files.items() if f and f[1] == "row"):
        where = f"{arc.path}: {name}"
        parsed = R.parse_csv(arc.members[name].decode("utf-8", "replace"), where)
        if len(parsed) != 1:
            raise SubmissionError(f"{where}: holds {len(parsed)} rows; a run file holds one")
        row = parsed[0]
        row_file, rec_name = run_files(row["run_id"])
        if name != row_file or R.run_id(row) != row["run_id"]:
            raise SubmissionError(
                f"{where}: its identity hashes to run {R.run_id(row)}, not the {row['run_id']} "
                "it is named by (an edited identity field)"
            )
        for col, key in SHARED.items():
            if row[col] != meta.get(key):
                raise SubmissionError(
                    f"{where}: {col} is {row[col]!r}, the submission's is {meta.get(key)!r} "
                    "(a row of another sweep or another version of the code)"
                )
        if row["task"] not in meta["tasks"]:
            raise SubmissionError(f"{where}: task {row['task']!r} is not one of the sweep's")
        if row["record_sha256"]:
            data = arc.members.get(rec_name)
            if data is None:
                raise SubmissionError(f"{where}: its prediction file {rec_name} is missing")
            try:
                REC.check_pair(row, REC.parse(data, rec_name), data, f"{arc.path}: {rec_name}")
            except REC.RecordError as err:
                raise SubmissionError(f"{err} (an edited row value or prediction)") from None
        rows[row["run_id"]] = row
    records = {n for n, f in files.items() if f and f[1] == "record"}
    if stray := sorted(records - {run_files(rid)[1] for rid in rows}):
        raise SubmissionError(f"{arc.path}: {stray[0]} belongs to no submitted row")
    if not rows or len({r["method_config"] for r in rows.values()}) != 1:
        raise SubmissionError(f"{arc.path}: no rows, or rows of several method configs")
    return rows


def check_source(arc: Archive) -> list[tuple[str, bytes]]:
    """Step 3: the submitted source files hash to the rows' ``method_source``."""
    source = arc.meta.get("source") or {}
    files = [(hashed, arc.members[m]) for m, hashed in source.items() if m in arc.members]
    shipped = {n for n in arc.members if n.startswith("source/")}
    if len(files) != len(source) or shipped != set(source):
        raise SubmissionError(f"{arc.path}: the source files are not the ones the manifest names")
    if (got := source_hash(files)) != arc.meta["method_source"]:
        raise SubmissionError(
            f"{arc.path}: the submitted source hashes to {got}, the rows' method_source is "
            f"{arc.meta['method_source']} (edited source)"
        )
    return files


def check_budget(arc: Archive, work: Path) -> str:
    """Step 4: the budget's id and values. Returns what ``--budget`` the re-runs take."""
    from pebench.budget import get_budget
    from pebench.budget_file import load_budget_file

    values = _json_member(arc, "budget.json")
    if name := arc.meta.get("budget_file"):
        path = work / "budget" / Path(name).name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(arc.members[name])
        budget, given = load_budget_file(path), str(path)
    else:
        budget, given = get_budget(arc.meta["budget"]), arc.meta["budget"]
    local = json.loads(json.dumps(budget.as_dict()))
    if budget.id != arc.meta["budget"] or local != values:
        raise SubmissionError(
            f"{arc.path}: budget {budget.id!r} here does not have the values of the submitted "
            f"budget {arc.meta['budget']!r} (a swapped budget)"
        )
    return given


def check_data(arc: Archive, rows: dict[str, dict], data_dir: str | None) -> None:
    """Step 5: the rows' data lineage is that of the data prepared here."""
    from pebench.datasets import describe_data, get_task

    data = _json_member(arc, "data.json")
    image_size = _json_member(arc, "budget.json")["image_size"]
    for rid, row in rows.items():
        if [row["data_format"], row["data_manifest"]] != data.get(row["task"]):
            raise SubmissionError(f"{arc.path}: run {rid} names other data than data.json")
    for task in arc.meta["tasks"]:
        here = list(describe_data(get_task(task), data_dir, image_size))
        if here != data.get(task):
            raise SubmissionError(
                f"{arc.path}: task {task}: the submission's data is {data.get(task)}, the data "
                f"prepared here is {here} (a data-manifest mismatch: other data, or another "
                "--data-dir)"
            )


def sample(rows: dict[str, dict], k: int, seed: int) -> list[str]:
    """``k`` run ids drawn with ``seed``: one search trial and one final first, then any."""
    ok = sorted(rid for rid, r in rows.items() if r["status"] == "ok" and r["record_sha256"])
    rng = random.Random(seed)
    picked: list[str] = []
    for phase in ("search", "final"):
        of_phase = [rid for rid in ok if rows[rid]["phase"] == phase]
        if of_phase and len(picked) < k:
            picked.append(rng.choice(of_phase))
    rest = [rid for rid in ok if rid not in picked]
    return picked + rng.sample(rest, min(len(rest), max(0, k - len(picked))))


def seed_spread(rows: dict[str, dict]) -> tuple[float, int]:
    """Pooled variance over seeds of the finals' test scores, and its degrees of freedom.

    Each task's scores deviate from their own mean; the squares are pooled over tasks (the seed
    noise of one method under one budget is one quantity), ``df = sum(seeds_t - 1)``.
    """
    by_task: dict[str, list[float]] = {}
    for r in rows.values():
        if r["phase"] == "final" and r["status"] == "ok" and not math.isnan(r["test_top1"]):
            by_task.setdefault(r["task"], []).append(r["test_top1"])
    ss = sum(sum((x - statistics.fmean(v)) ** 2 for x in v) for v in by_task.values())
    df = sum(len(v) - 1 for v in by_task.values())
    return (ss / df if df else 0.0), df


def tolerance(row: dict[str, Any], rows: dict[str, dict]) -> float:
    """How far a re-run's score may lie from the submitted one outside a matching environment.

    A re-run on other hardware or software diverges in round-off, and training amplifies that:
    at worst it is another draw of the run's seed noise. The difference of two such runs has
    variance ``2 (s2 + p(1-p)/n)``: ``s2`` the pooled seed variance of the submitted finals
    (:func:`seed_spread`), ``p(1-p)/n`` a floor from the run's own test noise. The tolerance is
    that standard deviation times the two-sided Student-t quantile at level :data:`ALPHA` with
    the pooled degrees of freedom (normal without any): a genuine run is refused in at most
    ``ALPHA`` of verifications under that model (``tests/test_submission.py`` simulates it).
    """
    from scipy import stats

    split = REC.SPLIT_OF_PHASE[row["phase"]]
    n, k = REC.COUNT_COLUMNS[split]
    p = row[k] / row[n]
    s2, df = seed_spread(rows)
    q = stats.t.ppf(1 - ALPHA / 2, df) if df else stats.norm.ppf(1 - ALPHA / 2)
    return float(q * math.sqrt(2 * (s2 + p * (1 - p) / row[n])))


def same_environment(row: dict[str, Any], env: dict[str, str]) -> bool:
    """Whether a run may reproduce bit for bit here: CPU, same Python, torch and timm."""
    return (
        row["device"].startswith("cpu")
        and row["python_version"] == env["python"]
        and row["torch_version"] == env["torch"]
        and row["timm_version"] == env["timm"]
    )


def compare(rid: str, sub: dict, rows: dict, submitted: RunStore, rerun: RunStore) -> dict:
    """One sampled run: its submitted and re-run scores and predictions, and the verdict."""
    env, new = environment(), rerun.read(rid)
    col = REC.SCORE_COLUMN[REC.SPLIT_OF_PHASE[sub["phase"]]]
    out = {"run_id": rid, "phase": sub["phase"], "task": sub["task"], "seed": sub["seed"]}
    out |= {"submitted": sub[col], "rerun": None, "identical": False, "ok": False}
    if new is None or new["status"] != sub["status"]:
        got = f"{new['status']}: {new['error'][:200]}" if new else "missing"
        out["detail"] = f"re-run {got}"
        return out
    old_rec, new_rec = submitted.load_record(sub), rerun.load_record(new)
    out["rerun"] = new[col]
    out["identical"] = old_rec is not None and new_rec is not None and old_rec.pred == new_rec.pred
    out["bit_identical_expected"] = same_environment(sub, env)
    out["tolerance"] = 0.0 if out["bit_identical_expected"] else tolerance(sub, rows)
    out["ok"] = out["identical"] or (
        not out["bit_identical_expected"] and abs(new[col] - sub[col]) <= out["tolerance"]
    )
    return out


__all__ = [
    "check_budget",
    "check_data",
    "check_rows",
    "check_source",
    "compare",
    "environment",
    "sample",
    "same_environment",
    "seed_spread",
    "tolerance",
]
