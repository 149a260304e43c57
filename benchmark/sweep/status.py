"""``pebench status``: done / running / failed / missing runs of a sweep, per method and suite.

The grid is expanded exactly as :func:`pebench.sweep.dispatch.dispatch` expands it (same run ids):
every search trial, and the finals of a task once all its search trials have a row (before that its
finals cannot be named yet and count as missing). A run is

- ``done``: its row has a final status (``ok``, ``diverged``);
- ``running``: a live marker names its worker (a marker whose pid is dead on this host, or
  older than the run's timeout plus a grace, is stale and ignored);
- ``failed``: its row has another status (``failed``, ``oom``, ``timeout``; rerun on resubmission);
- ``missing``: no row and no live marker.

A task whose data was never prepared (``plan_sweeps(..., unprepared_ok=True)``) has no run ids
yet (a run id names the data's manifest): all its runs count as missing, each carrying the
loader's message, and the table says in one line which tasks and how to prepare them.

Rows of the same method and preset recorded by other code (another ``method_source``: the plugin
was edited or upgraded since) are never counted as runs of the grid; :func:`other_code` counts
them, and the table names them below its runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pebench import results as R
from pebench.datasets import TaskSpec
from pebench.run import RunSpec
from pebench.sweep.plan import Sweep

STATES = ("done", "running", "failed", "missing")


@dataclass(frozen=True)
class RunState:
    """One run of the grid and its state.

    ``run_id`` is empty for finals not expandable yet and for every run of a task without
    prepared data (``error`` then says why, and what prepares it).
    """

    run_id: str
    method: str
    suite: str
    task: str
    phase: str
    trial: int | None
    seed: int
    state: str
    status: str = ""
    job_id: str = ""
    log_path: str = ""
    host: str = ""
    error: str = ""


def _label(sweep: Sweep) -> str:
    return sweep.method if sweep.preset == "default" else f"{sweep.method}.{sweep.preset}"


def _state(sweep: Sweep, spec: RunSpec) -> tuple[RunState, dict[str, Any] | None]:
    rid, store = spec.base_row["run_id"], sweep.store
    try:
        row = store.read(rid)
    except R.ResultsError:  # unreadable: the run is redone
        row = None
    marker = store.marker(rid)
    live = store.running(rid) is not None
    if row is not None and row["status"] in R.DONE_STATUSES:
        state = "done"
    elif live:
        state = "running"
    else:
        state = "failed" if row is not None else "missing"
    src = marker if state == "running" else (row or {})
    info = RunState(
        run_id=rid,
        method=_label(sweep),
        suite=spec.base_row["suite"],
        task=spec.task_name,
        phase=spec.phase,
        trial=spec.trial,
        seed=spec.seed,
        state=state,
        status=row["status"] if row is not None else "",
        job_id=str(src.get("job_id", "")),
        log_path=str(src.get("log_path", "")),
        host=str(marker.get("host", "")) if live and marker else "",
        error=(row["error"].splitlines() or [""])[0] if row is not None else "",
    )
    return info, row


def _unprepared(sweep: Sweep, task: TaskSpec) -> list[RunState]:
    """The runs of a task without prepared data: all missing, none nameable yet."""
    why = dict(method=_label(sweep), suite=task.suite, task=task.name, state="missing")
    why["error"] = sweep.unprepared[task.name]
    search = [
        RunState("", **why, phase="search", trial=i, seed=seed)
        for i, _ in enumerate(sweep.budget.trials())
        for seed in sweep.budget.search_seeds()
    ]
    return search + [RunState("", **why, phase="final", trial=None, seed=s) for s in sweep.seeds]


def grid_rows(sweep: Sweep) -> list[tuple[RunState, dict[str, Any] | None]]:
    """Every run of ``sweep``'s grid in grid order: its state and its row (``None``: none)."""
    out: list[tuple[RunState, dict[str, Any] | None]] = []
    for task in sweep.tasks:
        if task.name in sweep.unprepared:
            out.extend((state, None) for state in _unprepared(sweep, task))
            continue
        search = [_state(sweep, s) for s in sweep.search_specs(task)]
        out.extend(search)
        rows = [row for _, row in search]
        if all(r is not None for r in rows):  # the dispatcher's rule (Sweep.after_search)
            _, finals = sweep.after_search(task, rows)
            out.extend(_state(sweep, s) for s in finals)
            continue
        pending = dict(method=_label(sweep), suite=task.suite, task=task.name, phase="final")
        for seed in sweep.seeds:  # not expandable before its search is recorded
            out.append((RunState("", **pending, trial=None, seed=seed, state="missing"), None))
    return out


def sweep_states(sweeps: list[Sweep]) -> list[RunState]:
    """Every run of ``sweeps`` in grid order, with its state."""
    return [state for sweep in sweeps for state, _ in grid_rows(sweep)]


def other_code(sweeps: list[Sweep]) -> list[dict[str, Any]]:
    """Rows of each sweep's method and preset in its folder from other code than the current.

    Returns:
        One ``{"method", "source", "current", "rows"}`` per other ``method_source`` found (``""``
        for rows written before sources were recorded).
    """
    out: list[dict[str, Any]] = []
    for sweep in sweeps:
        current = sweep.static.get("method_source", "")
        found = Counter(
            r["method_source"]
            for r in (sweep.store.rows(skipped=[]) if sweep.store.exists() else [])
            if r["method"] == sweep.method and r["preset"] == sweep.preset
            and r["method_source"] != current
        )  # fmt: skip
        out += [
            {"method": _label(sweep), "source": src, "current": current, "rows": n}
            for src, n in sorted(found.items())
        ]
    return out


def summarize(states: list[RunState], other: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Counts per (method, suite) and in total, the failed and running runs, rows of other code.

    ``unprepared``: one ``{"task", "suite", "runs", "error"}`` per task without prepared data
    (``runs``: its missing runs, every method together), in grid order.
    """
    groups: dict[tuple[str, str], Counter] = {}
    for s in states:
        groups.setdefault((s.method, s.suite), Counter())[s.state] += 1
    total = Counter(s.state for s in states)

    def counts(c: Counter) -> dict[str, int]:
        return {k: c.get(k, 0) for k in STATES} | {"total": sum(c.values())}

    return {
        "groups": [{"method": m, "suite": su, **counts(c)} for (m, su), c in groups.items()],
        "total": counts(total),
        "complete": total.get("done", 0) == len(states),
        "failed": [asdict(s) for s in states if s.state == "failed"],
        "running": [asdict(s) for s in states if s.state == "running"],
        "other_code": list(other),
        "unprepared": _unprepared_tasks(states),
    }


def _unprepared_tasks(states: list[RunState]) -> list[dict[str, Any]]:
    """One entry per task whose runs cannot be named for want of prepared data."""
    tasks: dict[str, dict[str, Any]] = {}
    for s in states:
        if s.state == "missing" and s.error:  # only a task without data has such runs
            entry = tasks.setdefault(
                s.task, dict(task=s.task, suite=s.suite, runs=0, error=s.error)
            )
            entry["runs"] += 1
    return list(tasks.values())


def _unprepared_line(unprepared: Sequence[dict[str, Any]]) -> str:
    """The table's one line on tasks without prepared data: which, and what prepares them."""
    counts = Counter(u["suite"] for u in unprepared)
    which = ", ".join(f"{n} {suite} task{'s' if n > 1 else ''}" for suite, n in counts.items())
    runs = sum(u["runs"] for u in unprepared)
    return (
        f"not prepared: {which} without prepared data, so their {runs} runs count as missing "
        f"(a run id names the data it reads); for example {unprepared[0]['error']}"
    )


def format_table(summary: dict[str, Any]) -> str:
    """The summary as a plain-text table, then one line per failed run."""
    cols = (*STATES, "total")
    head = f"{'method':<20} {'suite':<10}" + "".join(f"{k:>9}" for k in cols)
    lines = [head, "-" * len(head)]
    for g in [*summary["groups"], {"method": "all", "suite": "", **summary["total"]}]:
        lines.append(f"{g['method']:<20} {g['suite']:<10}" + "".join(f"{g[k]:>9}" for k in cols))
    for f in summary["failed"]:
        where = f" job {f['job_id']}" if f["job_id"] else ""
        log = f" log {f['log_path']}" if f["log_path"] else ""
        lines.append(
            f"failed: {f['method']} {f['task']} {f['phase']} trial={f['trial']} seed={f['seed']} "
            f"{f['status']}{where}{log}: {f['error']}"
        )
    for o in summary.get("other_code", ()):
        lines.append(
            f"other code: {o['rows']} rows of {o['method']} come from method_source "
            f"{o['source'] or '(not recorded)'}, not the current {o['current']}: they are not "
            "runs of this grid (the method's code changed since; its leaderboard rows are separate)"
        )
    if summary.get("unprepared"):
        lines.append(_unprepared_line(summary["unprepared"]))
    return "\n".join(lines)


__all__ = [
    "STATES",
    "RunState",
    "format_table",
    "grid_rows",
    "other_code",
    "summarize",
    "sweep_states",
]
