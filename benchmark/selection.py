"""Model selection on validation data: which search trial wins, and where it lies in its grid.

One home for the selection rule, shared by the sweep (which trial the finals retrain) and the
leaderboard (which finals still match their search, and how many selections sit on an edge of
the grid). Torch-free: rows are plain dicts (:mod:`pebench.results`).

A selection *on an edge* is a trial whose learning rate (or weight decay) is the smallest or the
largest of its grid, where that grid has more than one value: the optimum may lie beyond it, so
the comparison measures the grid as much as the method.

With search replicates (a budget's ``search_replicates``: each trial runs under R search seeds)
a trial is ranked by the **mean** validation score over its replicates, and a replicate that
diverged counts as :data:`DIVERGED_SCORE` (0) in that mean: an lr at the edge of a cliff, where
one seed survives and another diverges, scores below an lr where every seed trains, so a
surviving lucky run can no longer carry it. A trial needs at least one ``ok`` replicate to be
selectable; with one replicate per trial this is the rule of a single run.

Two rules rank the trials (a budget's ``selection``, recorded in every row it writes as
``selection_rule``; rows without it are ``max``):

- ``max``: the trial with the highest mean.
- ``smoothed``: the trial with the highest *smoothed* mean, a weighted mean of its own mean
  (weight 1/2) and of its neighbours along the learning-rate ladder at the same weight decay
  (1/4 each; at an end of the ladder 2/3 and 1/3). Validation accuracy is a smooth function of
  log-lr, so averaging adjacent rungs cuts the noise of a noisy maximum, and a rung next to a
  cliff (a neighbour that diverged or fell to chance) loses against a rung on a plateau. Measured
  on 12 (method, task) cells of the demo-ref protocol with 6 replicates each, split 10 ways into
  two halves of 3: the selection changed between halves in 8 % of splits against 34 % under
  ``max``, and the held-out validation accuracy of the selected rung rose (mean shortfall from
  the held-out best 0.58 pts against 1.21).

Ties still go to the smaller lr, then the smaller weight decay.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

Row = Mapping[str, Any]

#: search statuses that are final outcomes (a rerun would give the same): the finals may start
SETTLED = ("ok", "diverged")
#: the validation score a diverged replicate counts as in its trial's mean
DIVERGED_SCORE = 0.0
#: selection rules (a budget's ``selection``; see the module docstring)
RULES = ("max", "smoothed")
#: the weight of each lr neighbour under the ``smoothed`` rule (the trial itself: 1 - 2 w)
NEIGHBOUR_WEIGHT = 0.25


@dataclass(frozen=True)
class TrialScore:
    """One search trial's validation score over its replicates.

    Attributes:
        row: its first ``ok`` replicate's row (``None`` when none is ``ok``).
        mean: mean validation score over the replicates with an outcome (diverged count 0).
        sd: sample std over them (NaN with fewer than two).
        replicates: replicates with an outcome (``ok`` or diverged).
        ok: ``ok`` replicates.
        score: what the selection ranks trials by: ``mean`` under the ``max`` rule, the
            smoothed mean under ``smoothed``.
        lr: the trial's learning rate.
        weight_decay: the trial's weight decay.
    """

    row: Row | None
    mean: float
    sd: float
    replicates: int
    ok: int
    score: float = math.nan
    lr: float = math.nan
    weight_decay: float = math.nan


def rule_of(search_rows: Iterable[Row]) -> str:
    """The selection rule the rows were written under (``max`` for rows without one).

    Raises:
        ValueError: rows of one cell that name different rules (they come from one budget).
    """
    rules = {r.get("selection_rule") or "max" for r in search_rows}
    if len(rules) > 1:
        raise ValueError(f"search rows of one cell name different selection rules: {sorted(rules)}")
    rule = rules.pop() if rules else "max"
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; known: {', '.join(RULES)}")
    return rule


def smoothing_weights(grid: Sequence[tuple[float, float]], rule: str) -> list[list[float]]:
    """The matrix ``W`` with ranking score ``i`` = ``sum_j W[i][j] * mean_j`` under ``rule``.

    ``grid`` holds each trial's ``(lr, weight decay)``. Under ``max`` ``W`` is the identity;
    under ``smoothed`` row ``i`` weighs trial ``i`` 1/2 and its lr neighbours at the same weight
    decay 1/4 each (renormalised at an end of the ladder). The one home of the weights: the
    selection and the estimator's simulated searches (:mod:`pebench.report.precision`) use it.
    """
    n = len(grid)
    out = [[float(i == j) for j in range(n)] for i in range(n)]
    if rule != "smoothed":
        return out
    for wd in {g[1] for g in grid}:
        ladder = sorted((lr, t) for t, (lr, w) in enumerate(grid) if w == wd)
        for i, (_, t) in enumerate(ladder):
            row = [0.0] * n
            row[t] = 1 - 2 * NEIGHBOUR_WEIGHT
            for j in (i - 1, i + 1):
                if 0 <= j < len(ladder):
                    row[ladder[j][1]] = NEIGHBOUR_WEIGHT
            total = sum(row)
            out[t] = [v / total for v in row]
    return out


def _smoothed(scores: dict[int, TrialScore]) -> dict[int, float]:
    """Trial -> its mean smoothed with its lr neighbours at the same weight decay."""
    trials = [t for t, s in scores.items() if not math.isnan(s.mean)]
    weights = smoothing_weights(
        [(scores[t].lr, scores[t].weight_decay) for t in trials], "smoothed"
    )
    means = [scores[t].mean for t in trials]
    # rounded: equal weighted sums that differ by float round-off are ties (-> the smaller lr)
    return {
        t: round(sum(w * m for w, m in zip(row, means, strict=True)), 12)
        for t, row in zip(trials, weights, strict=True)
    }


def trial_scores(search_rows: Iterable[Row]) -> dict[int, TrialScore]:
    """Trial index -> its score over its replicates (see the module docstring)."""
    search_rows = list(search_rows)
    by_trial: dict[int, list[Row]] = {}
    for r in search_rows:
        by_trial.setdefault(r["trial"], []).append(r)
    out = {}
    for trial, rows in sorted(by_trial.items()):
        rows = sorted(rows, key=lambda r: (r.get("seed", 0), r.get("run_id", "")))
        ok = [r for r in rows if r["status"] == "ok" and not math.isnan(r["val_top1"])]
        values = [
            r["val_top1"] if r in ok else DIVERGED_SCORE
            for r in rows
            if r in ok or r["status"] == "diverged"
        ]
        out[trial] = TrialScore(
            ok[0] if ok else None,
            statistics.fmean(values) if values else math.nan,
            statistics.stdev(values) if len(values) > 1 else math.nan,
            len(values),
            len(ok),
            lr=rows[0]["lr"],
            weight_decay=rows[0]["weight_decay"],
        )
    ranked = _smoothed(out) if rule_of(search_rows) == "smoothed" else {}
    return {t: replace(s, score=ranked.get(t, s.mean)) for t, s in out.items()}


def select_trial(search_rows: Iterable[Row]) -> Row | None:
    """Best search trial by its rule's score; ties go to the smaller lr, then wd.

    Returns the row of its first ``ok`` replicate with ``val_top1`` the trial's mean (one
    replicate: the row as it is), or ``None`` when no trial has an ``ok`` replicate.
    """
    scores = [s for s in trial_scores(search_rows).values() if s.ok]
    if not scores:
        return None
    best = min(scores, key=lambda s: (-s.score, s.lr, s.weight_decay))
    return best.row if best.replicates == 1 else {**best.row, "val_top1": best.mean}


def margin(search_rows: Iterable[Row]) -> tuple[float, float]:
    """``(selected trial's replicate sd, its score minus the runner-up trial's score)``.

    Scores are what the rule ranks by (:attr:`TrialScore.score`; the mean under ``max``).
    """
    rows = list(search_rows)
    best = select_trial(rows)
    scores = trial_scores(rows)
    if best is None:
        return math.nan, math.nan
    others = [s.score for t, s in scores.items() if s.ok and t != best["trial"]]
    lead = scores[best["trial"]].score - max(others) if others else math.nan
    return scores[best["trial"]].sd, lead


def unsettled(search_rows: Iterable[Row]) -> list[Row]:
    """Search trials whose status is not a final outcome (``failed``, ``oom``, ``timeout``)."""
    return [r for r in search_rows if r["status"] not in SETTLED]


def edge(lr: float, wd: float, lr_grid: Sequence[float], wd_grid: Sequence[float]) -> str:
    """Where ``(lr, wd)`` lies in its grid: ``""`` inside, else its edges joined by ``+``.

    Edges are ``lr-low``, ``lr-high``, ``wd-low`` and ``wd-high``; a dimension with one value is
    never an edge.
    """
    out = []
    for name, value, grid in (("lr", lr, lr_grid), ("wd", wd, wd_grid)):
        values = sorted(set(grid))
        if len(values) < 2 or math.isnan(value):
            continue
        if value == values[0]:
            out.append(f"{name}-low")
        elif value == values[-1]:
            out.append(f"{name}-high")
    return "+".join(out)


def grid_text(lr_grid: Sequence[float], wd_grid: Sequence[float]) -> str:
    """The grid a selection was made from, as rows record it: ``lr=1e-3,3e-3 wd=1e-4``."""
    lrs = ",".join(f"{v:g}" for v in sorted(set(lr_grid)))
    wds = ",".join(f"{v:g}" for v in sorted(set(wd_grid)))
    return f"lr={lrs} wd={wds}"


def parse_grid(text: str) -> tuple[list[float], list[float]]:
    """The ``(lr grid, wd grid)`` of :func:`grid_text`'s text (``([], [])`` for ``""``)."""
    parts = dict(p.split("=", 1) for p in text.split() if "=" in p)
    return (
        [float(v) for v in parts.get("lr", "").split(",") if v],
        [float(v) for v in parts.get("wd", "").split(",") if v],
    )


def selection_fields(best: Row, lr_grid: Sequence[float], wd_grid: Sequence[float]) -> dict:
    """What a final row records of its selection: validation score, grid, edge.

    The validation score is the trial's mean over its replicates (:func:`select_trial`); its
    spread and its lead over the runner-up follow from the search rows (:func:`margin`), where
    the leaderboard computes them.
    """
    return {
        "val_top1": best["val_top1"],
        "selection_grid": grid_text(lr_grid, wd_grid),
        "selection_edge": edge(best["lr"], best["weight_decay"], lr_grid, wd_grid),
    }


__all__ = [
    "DIVERGED_SCORE",
    "NEIGHBOUR_WEIGHT",
    "RULES",
    "SETTLED",
    "TrialScore",
    "edge",
    "margin",
    "grid_text",
    "parse_grid",
    "rule_of",
    "select_trial",
    "smoothing_weights",
    "selection_fields",
    "trial_scores",
    "unsettled",
]
