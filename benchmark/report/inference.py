"""What a suite table's rows support: intervals, rank intervals, UB ranks, tiers and flags.

The bridge between the table (:mod:`pebench.report.tables`: entries of final ``ok`` rows) and
the estimators (:mod:`pebench.report.stats`). Per entry it builds the runs per task (seed values,
and the per-image correctness of their records, aligned by the prepared split's order), and per
table it computes every row's 95 % interval, the pairwise tests (Holm), UB ranks, tiers, rank
intervals and the resolvable difference. It also raises the flags that say where a number is
fragile:

- ``collapse``: a seed more than :data:`COLLAPSE_PTS` points below its cell's median;
- ``close``: the selection was won by at most one validation image (an exact tie included);
- ``cliff``: the next larger learning rate of the search diverged or scored at chance, so the
  selection sits right below a cliff (picking the maximum of one noisy run there picks the
  largest lr that happened to survive);
- ``edge``: the selection lies on an edge of the search grid.

Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pebench.report import stats as S
from pebench.report.aggregate import (
    SOURCE,
    Entry,
    SuiteInfo,
    config_key,
    load_correct,
    ranking_weights,
)
from pebench.selection import trial_scores

Row = dict[str, Any]
#: a seed this many points below its cell's median is a collapse
COLLAPSE_PTS = 10.0
#: a validation score within this many binomial sds above chance counts as "at chance"
CHANCE_SDS = 2.0
#: the flag kinds, in display order, with their one-line meaning
FLAGS = {
    "collapse": f"a seed more than {COLLAPSE_PTS:g} pts below its task's median",
    "close": "the selection was won by ≤ 1 validation image (ties included)",
    "cliff": "the next larger lr of the search diverged or scored at chance",
    "edge": "the selected lr is on an edge of the search grid",
}


@dataclass
class RowStats:
    """What the table's statistics say about one row.

    Attributes:
        interval: the ranking suite mean with its 95 % interval.
        ub_rank: 1 + the number of rows significantly better.
        tier: its tier (1 = the best).
        rank_lo: 2.5 % quantile of its rank over joint draws.
        rank_hi: 97.5 % quantile.
        p_first: share of joint draws that rank it first.
        claims: whether it has enough seeds for significance claims.
        flags: flag kind -> the tasks it was raised on.
        runs: the estimator's view of the row (``None`` without a complete suite mean).
        index: its index in the table's statistics (``-1`` without a complete suite mean).
        search: task -> validation score of every search trial in grid order (``NaN`` for a
            trial without an ``ok`` outcome), for the search-sensitivity figure.
        n_val: task -> validation images the search scored (when its rows say).
        grid: task -> ``(lr, weight decay)`` of each of :attr:`search`'s trials.
    """

    interval: S.Estimate
    ub_rank: int = 0
    tier: int = 0
    rank_lo: int = 0
    rank_hi: int = 0
    p_first: float = math.nan
    claims: bool = False
    flags: dict[str, list[str]] = field(default_factory=dict)
    runs: S.RowRuns | None = None
    index: int = -1
    search: dict[str, list[float]] = field(default_factory=dict)
    n_val: dict[str, int] = field(default_factory=dict)
    grid: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def row_runs(entry: Entry, info: SuiteInfo, correct: Mapping[tuple[str, str], Any]) -> S.RowRuns:
    """The estimator's view of ``entry``: seed values and per-image correctness per task."""
    by_task: dict[str, list[Row]] = {}
    for r in sorted(entry.runs, key=lambda r: (r["task"], r["seed"], r["run_id"])):
        by_task.setdefault(r["task"], []).append(r)
    tasks = {}
    for task, rows in by_task.items():
        values = np.array([100.0 * r["test_top1"] for r in rows])
        flags = [correct.get((r[SOURCE], r["run_id"])) for r in rows]
        matrix = None
        if all(f is not None for f in flags) and len({len(f) for f in flags}) == 1:
            matrix = np.stack(flags)
        ns = {_count(r["n_test"]) for r in rows}
        tasks[task] = S.TaskRuns(
            values,
            matrix,
            ns.pop() if len(ns) == 1 else None,
            "|".join(sorted({r["data_manifest"] or r["data_format"] for r in rows})),
        )
    return S.RowRuns(tasks, ranking_weights(info))


def _count(value: Any) -> int | None:
    """A count column's value as an int, ``None`` when absent (empty, or NaN in a DataFrame)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value)


def _search_of(rows: Sequence[Row]) -> dict[tuple, list[Row]]:
    out: dict[tuple, list[Row]] = {}
    for r in rows:
        if r["phase"] == "search":
            out.setdefault(_cell_key(r), []).append(r)
    return out


def _cell_key(r: Row) -> tuple:
    return (*config_key(r), r["task"])


def selection_flags(trials: Sequence[Row], chosen: Row, num_classes: int | None) -> list[str]:
    """``close`` and ``cliff`` for the selection of ``chosen`` among its search ``trials``.

    Trials are scored as the selection scores them (:func:`pebench.selection.trial_scores`:
    the mean over replicates, a diverged replicate counting 0, smoothed along the lr ladder
    under the ``smoothed`` rule): ``close`` compares those scores.
    """
    out = []
    scores = trial_scores(trials)
    best = scores.get(chosen["trial"])
    n = _count(best.row["n_val"]) if best is not None and best.row else None
    others = [s.score for t, s in scores.items() if s.ok and t != chosen["trial"]]
    if best is not None and best.ok and others and n:
        if round((best.score - max(others)) * n) <= 1:
            out.append("close")
    lrs = {
        t: s.row["lr"] if s.row else next(r["lr"] for r in trials if r["trial"] == t)
        for t, s in scores.items()
    }
    same_wd = {r["trial"] for r in trials if r["weight_decay"] == chosen["weight_decay"]}
    higher = sorted((t for t in same_wd if lrs[t] > chosen["lr"]), key=lambda t: lrs[t])
    if higher:
        nxt = scores[higher[0]]
        n = (_count(nxt.row["n_val"]) if nxt.row else None) or n
        if not nxt.ok and nxt.replicates:  # every replicate diverged
            out.append("cliff")
        elif nxt.ok and num_classes and n:
            chance = 1.0 / num_classes
            if nxt.mean <= chance + CHANCE_SDS * math.sqrt(chance * (1 - chance) / n):
                out.append("cliff")
    return out


def row_flags(
    entry: Entry, search: Mapping[tuple, list[Row]], classes: Mapping[str, int]
) -> dict[str, list[str]]:
    """Flag kind -> tasks, for one entry (see :data:`FLAGS`)."""
    flags: dict[str, list[str]] = {k: [] for k in FLAGS}
    firsts: dict[str, Row] = {}
    for r in sorted(entry.runs, key=lambda r: (r["task"], r["seed"], r["run_id"])):
        firsts.setdefault(r["task"], r)
    for task, values in entry.task_values.items():
        if len(values) >= 2 and min(values) < float(np.median(values)) - COLLAPSE_PTS:
            flags["collapse"].append(task)
        chosen = firsts[task]
        if chosen["selection_edge"]:
            flags["edge"].append(task)
        trials = search.get(_cell_key(chosen), [])
        for kind in selection_flags(trials, chosen, classes.get(task)):
            flags[kind].append(task)
    return {k: v for k, v in flags.items() if v}


def table_stats(
    entries: Sequence[Entry],
    info: SuiteInfo,
    rows: Sequence[Row],
    classes: Mapping[str, int],
) -> tuple[list[RowStats], S.TableStats | None]:
    """Every entry's :class:`RowStats` (table order) and the table's statistics.

    Entries without a complete suite mean get flags only (no interval, no rank). ``rows`` are
    all of the suite's rows (the search rows give the selection flags).
    """
    search = _search_of(rows)
    complete = [i for i, e in enumerate(entries) if not math.isnan(e.rank)]
    out = [RowStats(S.Estimate(e.rank, *[math.nan] * 4)) for e in entries]
    for e, s in zip(entries, out, strict=True):
        s.flags = row_flags(e, search, classes)
        s.search, s.grid = search_scores(e, search)
        cells = {_cell_key(r) for r in e.runs}
        s.n_val = {
            r["task"]: _count(r["n_val"])
            for c in cells
            for r in search.get(c, [])
            if _count(r["n_val"])
        }
    if not complete:
        return out, None
    correct = load_correct([r for i in complete for r in entries[i].runs])
    runs = [row_runs(entries[i], info, correct) for i in complete]
    table = S.table_stats(runs)
    for k, i in enumerate(complete):
        s = out[i]
        s.interval = table.intervals[k]
        s.ub_rank, s.tier = table.ub_rank[k], table.tiers[k]
        s.rank_lo, s.rank_hi, s.p_first = table.rank_lo[k], table.rank_hi[k], table.p_first[k]
        s.claims = table.claims[k]
        s.runs, s.index = runs[k], k
    return out, table


def search_scores(
    entry: Entry, search: Mapping[tuple, list[Row]]
) -> tuple[dict[str, list[float]], dict[str, list[tuple[float, float]]]]:
    """Per task, every search trial's validation score (%) in grid order, and its (lr, wd).

    A trial's score is the mean over its replicates; ``NaN`` for a trial without an ``ok``
    replicate.
    """
    out, grid = {}, {}
    for r in entry.runs:
        if r["task"] not in out:
            scores = trial_scores(search.get(_cell_key(r), []))
            out[r["task"]] = [100.0 * s.mean if s.ok else math.nan for s in scores.values()]
            grid[r["task"]] = [(s.lr, s.weight_decay) for s in scores.values()]
    return out, grid


__all__ = [
    "COLLAPSE_PTS",
    "FLAGS",
    "RowStats",
    "row_flags",
    "row_runs",
    "selection_flags",
    "table_stats",
]
