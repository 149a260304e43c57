"""The uncertainty figures of a suite: intervals with tiers, probability of improvement, search.

- ``<suite>_acc_intervals``: the primary figure. Every row's ranking suite mean with its 95 %
  interval, best first, coloured by tier, with its rank (UB) and rank interval;
- ``<suite>_acc_improvement``: P(row > column) for the top rows (rliable's probability of
  improvement: the mean over tasks of the share of seed pairs in which the row wins);
- ``<suite>_acc_search``: the expected best validation accuracy after ``n`` search trials
  drawn from the grid (Dodge et al. 2019), mean over tasks: how much each row owes to its search
  budget.

Same conventions as :mod:`pebench.report.plots` (Agg canvas, print sizes, no metadata).
Torch-free.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pebench.report import stats as S
from pebench.report.aggregate import Entry
from pebench.report.figstyle import new_figure
from pebench.report.figure_notes import omitted_note, point_label
from pebench.report.tables import SuiteTable

#: rows shown in the probability-of-improvement map and the search figure
TOP_ROWS = 10
TIER_COLORS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown")


def _ranked(table: SuiteTable) -> list[Entry]:
    return [e for e in table.entries if e.stats is not None and e.stats.runs is not None]


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8)
    ax.set_axis_off()


def interval_figure(table: SuiteTable) -> Any:
    """Suite means with 95 % intervals, best at the top, coloured by tier."""
    rows = _ranked(table)
    fig = new_figure((7.0, max(2.4, 0.9 + 0.22 * len(rows))))
    ax = fig.add_subplot(1, 1, 1)
    name = table.info.name
    ax.set_title(f"{name}: {table.mean_names[-1]} with 95% interval, by tier", fontsize=9)
    if not rows:
        _empty(ax, "no method has a result on every task of the suite yet")
        return fig
    y = np.arange(len(rows))[::-1]
    for yi, e in zip(y, rows, strict=True):
        s = e.stats
        color = TIER_COLORS[(s.tier - 1) % len(TIER_COLORS)]
        lo, hi = s.interval.lo, s.interval.hi
        if math.isfinite(lo):
            ax.plot([lo, hi], [yi, yi], color=color, linewidth=1.4, solid_capstyle="butt")
        face = color if s.claims else "white"
        ax.scatter([s.interval.value], [yi], s=18, color=color, facecolor=face, zorder=3)
        ub = f"{s.ub_rank}" if s.claims else f"({s.ub_rank})°"
        ax.annotate(
            f"tier {s.tier}, UB {ub}, rank {s.rank_lo}–{s.rank_hi}",
            (hi if math.isfinite(hi) else s.interval.value, yi),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=6,
            color="0.3",
        )
    ax.set_yticks(y, [point_label(table, e) for e in rows], fontsize=6.5)
    ax.set_xlabel("accuracy (%): point = mean over tasks of seed means; bar = 95% interval "
                  "(seed + test-set error)", fontsize=7)  # fmt: skip
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(True, axis="x", alpha=0.3, linewidth=0.5)
    left, right = ax.get_xlim()
    ax.set_xlim(left, right + 0.25 * (right - left))  # room for the annotations
    few = sum(not e.stats.claims for e in rows)
    note = (
        f"tiers: the best remaining row and every row not significantly worse (paired t, Holm "
        f"over {len(table.stats.pairs)} pairs); hollow, (n)°: fewer than "
        f"{S.MIN_SEEDS_FOR_CLAIMS} seeds, no significance claim ({few} of {len(rows)} rows)"
    )
    if left := omitted_note(table):
        note += "\n" + left
    fig.text(0.01, 0.005, note, fontsize=5.5, color="0.3", va="bottom")
    fig.subplots_adjust(left=0.3, right=0.98, top=1 - 0.45 / fig.get_figheight(),
                        bottom=0.75 / fig.get_figheight())  # fmt: skip
    return fig


def improvement_figure(table: SuiteTable) -> Any:
    """P(row > column) over the top rows (by mean), as a heat map with the values written."""
    rows = _ranked(table)[:TOP_ROWS]
    fig = new_figure((6.0, 5.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(
        f"{table.info.name}: probability of improvement P(row > column), top {len(rows)} rows",
        fontsize=9,
    )
    if len(rows) < 2:
        _empty(ax, "fewer than two rows with a complete suite mean")
        return fig
    grid = np.full((len(rows), len(rows)), np.nan)
    for i, a in enumerate(rows):
        for j, b in enumerate(rows):
            if i != j:
                grid[i, j] = S.probability_of_improvement(a.stats.runs, b.stats.runs)
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="RdBu_r")
    for i in range(len(rows)):
        for j in range(len(rows)):
            if i != j:
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=5.5)
    labels = [point_label(table, e) for e in rows]
    ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=6)
    ax.set_yticks(range(len(rows)), labels, fontsize=6)
    bar = fig.colorbar(image, ax=ax, fraction=0.04)
    bar.ax.tick_params(labelsize=6)
    fig.text(
        0.01,
        0.005,
        "mean over tasks of the share of seed pairs (row seed, column seed) the row wins, ties ½ "
        "(rliable); 0.5: no preference. Intervals: `pebench compare`",
        fontsize=5.5,
        color="0.3",
        va="bottom",
    )
    fig.subplots_adjust(left=0.25, right=0.95, top=0.93, bottom=0.25)
    return fig


def expected_max(scores: list[float], n: int) -> float:
    """Expected best of ``n`` trials drawn with replacement from ``scores`` (Dodge et al. 2019).

    A trial without an ``ok`` outcome (``NaN``) counts as the worst score, so it wins only when
    every drawn trial failed.
    """
    values = np.sort(np.nan_to_num(np.asarray(scores, dtype=float), nan=0.0))
    if not len(values):
        return math.nan
    k = len(values)
    cdf = (np.arange(1, k + 1) / k) ** n
    prev = np.concatenate([[0.0], cdf[:-1]])
    return float(np.sum(values * (cdf - prev)))


def search_figure(table: SuiteTable) -> Any:
    """Expected best validation accuracy vs number of search trials, top rows."""
    rows = [e for e in _ranked(table) if e.stats.search][:TOP_ROWS]
    fig = new_figure((7.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(
        f"{table.info.name}: expected best validation accuracy vs search trials (top rows)",
        fontsize=9,
    )
    if not rows:
        _empty(ax, "no search rows")
        return fig
    for k, e in enumerate(rows):
        trials = max(len(v) for v in e.stats.search.values())
        ns = np.arange(1, trials + 1)
        curve = [np.mean([expected_max(v, n) for v in e.stats.search.values()]) for n in ns]
        style = "-" if k < 5 else "--"
        label = point_label(table, e)
        ax.plot(ns, curve, style, marker="o", markersize=2.5, linewidth=1.0, label=label)
    ax.set_xlabel(
        "search trials n (drawn with replacement from the budget's grid); the budget runs "
        "every grid point once",
        fontsize=7,
    )
    ax.set_ylabel("E[max validation accuracy] (%), mean over tasks", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3, linewidth=0.5)
    ax.legend(fontsize=6, ncol=2, frameon=False)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.92, bottom=0.14)
    return fig


def stat_figures(table: SuiteTable, stem: str) -> dict[str, Any]:
    """The suite's uncertainty figures by file stem (``stem``: the suite's safe name)."""
    return {
        f"{stem}_acc_intervals": interval_figure(table),
        f"{stem}_acc_improvement": improvement_figure(table),
        f"{stem}_acc_search": search_figure(table),
    }


__all__ = [
    "expected_max",
    "improvement_figure",
    "interval_figure",
    "search_figure",
    "stat_figures",
]
