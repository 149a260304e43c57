"""Suite tables to figures: accuracy vs trainable parameters and vs peak memory, per suite.

Figures are sized for print: :data:`FIG_SIZE_IN` (a two-column width), PNG at
:data:`PNG_DPI` dpi and PDF (vector). The accuracy is the suite's ranking mean with its 95 %
interval (seed and test-set error, :mod:`pebench.report.stats`). Only rows with a complete suite
mean are plotted (a suite without any gets a placeholder figure saying so, so an old plot never
outlives its data); the Pareto front is drawn over the pretrained rows, and a front point that
is not significantly better than the next cheaper front point is drawn hollow: the front
cannot tell them apart. Labels are laid out by :mod:`pebench.report.labels` so that no two
overlap. The memory axis says how memory was measured
(:data:`pebench.report.columns.MEMORY_KINDS`), and kinds are never mixed on one axis: a suite
with rows of several kinds gets one memory figure per kind. The uncertainty figures (intervals
with tiers, probability of improvement, search sensitivity) come from
:mod:`pebench.report.stat_plots`. Output bytes are deterministic (:mod:`pebench.report.figstyle`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pebench import fsio
from pebench.datasets import Suite, TaskSpec
from pebench.report.aggregate import Entry, Row
from pebench.report.columns import MIB, memory_kind
from pebench.report.figstyle import FORMATS, encode, new_figure
from pebench.report.figure_notes import BAR_LEGEND, MEMORY_NOTES, omitted_note, point_label
from pebench.report.labels import Box, place_labels
from pebench.report.stat_plots import stat_figures
from pebench.report.stats import ALPHA
from pebench.report.tables import SuiteTable, tables

#: width and height in inches (a two-column figure; 3.5 in is one column)
FIG_SIZE_IN = (7.0, 4.8)
#: what the file names of figures look like (``<suite>_acc_<what>.<format>``)
NAME_PATTERN = "*_acc_*"
#: the axes' position in the figure: left, bottom, right, top (fractions; fixed, so the label
#: layout is computed on the final geometry)
AXES_BOX = (0.09, 0.25, 0.98, 0.92)
#: symlog threshold of the params axis, in M: linear below it, so a 0-parameter method shows
PARAMS_LINTHRESH = 0.01
#: (label, x, y, half-width of its 95 % interval, random-init backbone)
Point = tuple[str, float, float, float, bool]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Return the indices of the points on the (min cost, max value) Pareto front.

    A point ``(cost, value)`` is on the front when no other point has ``cost <=`` and
    ``value >=`` with at least one strict inequality (i.e. it has the highest value among all
    points that cost no more). Exact duplicates of a front point are all kept. Points with a NaN
    coordinate are ignored.

    Args:
        points: ``(cost, value)`` pairs.

    Returns:
        Indices into ``points``, sorted by cost (then by index).

    """
    pts = [(float(c), float(v)) for c, v in points]
    front = []
    for i, (ci, vi) in enumerate(pts):
        if math.isnan(ci) or math.isnan(vi):
            continue
        dominated = any(
            (cj <= ci and vj >= vi and (cj < ci or vj > vi))
            for j, (cj, vj) in enumerate(pts)
            if j != i and not (math.isnan(cj) or math.isnan(vj))
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (pts[i][0], i))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _segment(ax: Any, a: tuple[float, float], b: tuple[float, float], half: float) -> Box:
    """The display box of a horizontal or vertical data segment, ``half`` pixels thick."""
    (x0, y0), (x1, y1) = ax.transData.transform(a), ax.transData.transform(b)
    return Box(min(x0, x1) - half, min(y0, y1) - half, max(x0, x1) + half, max(y0, y1) + half)


def _obstacles(ax: Any, points: list[Point], front: list[int]) -> list[Box]:
    """Display boxes of the markers, error bars and front steps, for the labels to avoid."""
    half = 4.0 * ax.figure.dpi / 72.0
    boxes = []
    for i, j in zip(front, front[1:], strict=False):  # steps-post: across, then up
        (_, xi, yi, _, _), (_, xj, yj, _, _) = points[i], points[j]
        boxes.append(_segment(ax, (xi, yi), (xj, yi), half / 3))
        boxes.append(_segment(ax, (xj, yi), (xj, yj), half / 3))
    for _, x, y, std, _ in points:
        px, py = ax.transData.transform((x, y))
        boxes.append(Box(px - half, py - half, px + half, py + half))
        if not math.isnan(std):
            _, lo = ax.transData.transform((x, y - std))
            _, hi = ax.transData.transform((x, y + std))
            boxes.append(Box(px - half / 2, lo, px + half / 2, hi))
    return boxes


def _draw_points(ax: Any, points: list[Point], tied: set[int] | None = None) -> None:
    """Scatter the points with 95 % interval bars, the pretrained Pareto front highlighted.

    ``tied(front)`` gives the front points (indices into ``points``) not significantly better
    than the next cheaper front point: drawn hollow.
    """
    pretrained = [i for i, p in enumerate(points) if not p[4]]
    front = [pretrained[i] for i in pareto_front([points[i][1:3] for i in pretrained])]
    hollow = [i for i in front if tied is not None and i in tied]
    others = [i for i in range(len(points)) if i not in front]
    bars = [i for i, p in enumerate(points) if not math.isnan(p[3])]
    if bars:
        ax.errorbar(
            [points[i][1] for i in bars],
            [points[i][2] for i in bars],
            yerr=[points[i][3] for i in bars],
            fmt="none",
            ecolor="0.35",
            elinewidth=0.7,
            capsize=1.5,
            capthick=0.7,
            label=BAR_LEGEND,
            zorder=2,
        )
    if others:
        ax.scatter(
            [points[i][1] for i in others],
            [points[i][2] for i in others],
            c="0.55",
            marker="o",
            s=14,
            label="other rows",
            zorder=3,
        )
    if front:
        ax.plot(
            [points[i][1] for i in front],
            [points[i][2] for i in front],
            color="tab:red",
            marker="*",
            markersize=8,
            linewidth=1.0,
            drawstyle="steps-post",
            label="Pareto front (best accuracy at ≤ cost, pretrained)",
            zorder=4,
        )
    if hollow:
        ax.scatter(
            [points[i][1] for i in hollow],
            [points[i][2] for i in hollow],
            marker="*",
            s=70,
            facecolor="white",
            edgecolor="tab:red",
            linewidth=0.8,
            label="front point not significantly better than the cheaper one",
            zorder=5,
        )
    ax.margins(x=0.12, y=0.12)
    ax.autoscale_view()
    ax.set_xlim(ax.get_xlim())  # fixed from here on: the label layout works on final axes
    ax.set_ylim(ax.get_ylim())
    _tick_every_cost(ax, [p[1] for p in points])
    order = front + [i for i in others]
    place_labels(ax, [points[i][:3] for i in order], _obstacles(ax, points, front))


def _tick_every_cost(ax: Any, xs: list[float]) -> None:
    """Ticks at the points' costs when the axis would show fewer than two (one method).

    A narrow symlog range has no major tick inside it; a cost axis must say where its points are.
    """
    lo, hi = ax.get_xlim()
    shown = [t for t in ax.get_xticks() if lo <= t <= hi]
    if len(shown) >= 2:
        return
    ticks = sorted({x for x in xs if not math.isnan(x)})
    ax.set_xticks(ticks, [f"{x:.3g}" for x in ticks])
    ax.set_xlim(lo, hi)


def figure(
    table: SuiteTable,
    title: str,
    xlabel: str,
    points: list[Point],
    symlog: bool,
    tied: set[int] | None = None,
    note: str = "",
) -> Any:
    """One accuracy-vs-cost figure of ``table`` (a matplotlib Figure on an Agg canvas).

    Under the legend it says which rows it leaves out (no result on every task) and ``note``.

    Args:
        table: the suite table (names the ranking mean).
        title: the figure title.
        xlabel: the cost axis label.
        points: the rows to plot.
        symlog: a symlog cost axis (parameters) instead of a linear one.
        tied: indices of points that cannot be told from the next cheaper front point.
        note: what else the figure must say (what its memory axis measures).

    Returns:
        The Figure, drawn (its label boxes are final).

    """
    fig = new_figure(FIG_SIZE_IN)
    left, bottom, right, top = AXES_BOX
    fig.subplots_adjust(left=left, bottom=bottom, right=right, top=top)
    ax = fig.add_subplot(1, 1, 1)
    rank_name = table.mean_names[-1]
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(f"{table.info.name} {rank_name} accuracy (%)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3, linewidth=0.5)
    if symlog:
        ax.set_xscale("symlog", linthresh=PARAMS_LINTHRESH)
    if not points:
        ax.text(
            0.5,
            0.5,
            "no method has a result on every task of the suite yet",
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=8,
        )
    else:
        _draw_points(ax, points, tied)
        handles, names = ax.get_legend_handles_labels()
        fig.legend(
            handles, names, loc="lower center", bbox_to_anchor=(0.5, 0.045), ncol=2,
            fontsize=6.5, frameon=False,
        )  # fmt: skip
    lines = [text for text in (omitted_note(table), note) if text]
    if lines:
        fig.text(0.01, 0.004, "\n".join(lines), fontsize=5.5, color="0.3", va="bottom", wrap=True)
    return fig


def _half(e: Entry) -> float:
    return e.stats.interval.half_width if e.stats is not None else math.nan


def tied_on_front(table: SuiteTable, done: list[Entry], cost: list[float]) -> set[int]:
    """Indices (into ``done``) of front rows that the front cannot tell from their neighbour.

    A Pareto-front row (pretrained rows only) not significantly better than the next cheaper
    front row (paired test, Holm over the table's pairs).
    """
    pretrained = [i for i, e in enumerate(done) if not e.random]
    front = [pretrained[i] for i in pareto_front([(cost[i], done[i].rank) for i in pretrained])]
    out = set()
    for cheaper, dearer in zip(front, front[1:], strict=False):
        d, p = table.pair(done[dearer], done[cheaper])
        if not (p < ALPHA and d.value > 0):
            out.add(dearer)
    return out


def suite_figures(table: SuiteTable) -> dict[str, Any]:
    """The accuracy-vs-cost figures of one suite by file stem: vs params, vs memory per kind."""
    done = [e for e in table.entries if not math.isnan(e.rank)]
    name = table.info.name
    params = [
        (point_label(table, e), e.params_method / 1e6, e.rank, _half(e), e.random) for e in done
    ]
    tied = tied_on_front(table, done, [p[1] for p in params]) if table.stats else set()
    out = {
        f"{_safe(name)}_acc_vs_params": figure(
            table,
            f"{name}: accuracy vs trainable parameters",
            "trainable params excl. head (M); symlog axis, linear below "
            f"{PARAMS_LINTHRESH} M so 0-parameter methods are visible",
            params,
            symlog=True,
            tied=tied,
        )
    }
    kinds = sorted({k for e in done for k in e.mem}) or [""]
    for kind in kinds:
        measured = [e for e in done if kind in e.mem]
        mem = [
            (point_label(table, e), e.mem[kind] / MIB, e.rank, _half(e), e.random) for e in measured
        ]
        stem = f"{_safe(name)}_acc_vs_memory" + (f"_{_safe(kind)}" if len(kinds) > 1 else "")
        what = memory_kind(kind) if kind else "peak memory (not measured)"
        out[stem] = figure(
            table,
            f"{name}: accuracy vs {what}",
            f"{what}, MiB (maximum over runs)",
            mem,
            symlog=False,
            tied=tied_on_front(table, measured, [m[1] for m in mem]) if table.stats else None,
            note=MEMORY_NOTES.get(kind, ""),
        )
    return out


def figures(
    rows: Sequence[Row],
    suites: Mapping[str, Suite] | None,
    tasks: Mapping[str, TaskSpec] | None,
) -> dict[str, Any]:
    """Every suite's accuracy-vs-cost figures by file stem (see :func:`suite_figures`)."""
    out: dict[str, Any] = {}
    for table in tables(rows, suites, tasks):
        out.update(suite_figures(table))
    return out


def all_figures(suite_tables: Sequence[SuiteTable]) -> dict[str, Any]:
    """Every figure of the tables by file stem: the cost and the uncertainty figures.

    See :func:`suite_figures` and :func:`pebench.report.stat_plots.stat_figures`.
    """
    out: dict[str, Any] = {}
    for table in suite_tables:
        out.update(suite_figures(table))
        out.update(stat_figures(table, _safe(table.info.name)))
    return out


def plot_bytes(
    rows: Sequence[Row],
    suites: Mapping[str, Suite] | None,
    tasks: Mapping[str, TaskSpec] | None,
    suite_tables: Sequence[SuiteTable] | None = None,
) -> dict[str, bytes]:
    """Every figure in every format of :data:`FORMATS`, by file name (nothing written).

    Args:
        rows: the rows as :func:`pebench.report.aggregate.aggregate` returns them.
        suites: see :func:`pebench.report.markdown.render_markdown`.
        tasks: see :func:`pebench.report.markdown.render_markdown`.
        suite_tables: the tables of ``rows`` when the caller has built them already.

    Returns:
        ``{file name: bytes}``, e.g. ``demo_acc_vs_params.png`` and ``demo_acc_vs_params.pdf``.

    """
    if suite_tables is None:
        suite_tables = tables(rows, suites, tasks)
    out: dict[str, bytes] = {}
    for stem, fig in all_figures(suite_tables).items():
        for fmt in FORMATS:
            out[f"{stem}.{fmt}"] = encode(fig, fmt)
    return out


def plot(
    rows: Sequence[Row],
    out_dir: str | Path,
    *,
    suites: Mapping[str, Suite] | None = None,
    tasks: Mapping[str, TaskSpec] | None = None,
) -> list[Path]:
    """Write every suite's figures (PNG and PDF) into ``out_dir``, each file atomically.

    Args:
        rows: the rows as :func:`pebench.report.aggregate.aggregate` returns them.
        out_dir: folder for the figures (created).
        suites: see :func:`pebench.report.markdown.render_markdown`.
        tasks: see :func:`pebench.report.markdown.render_markdown`.

    Returns:
        The PNG paths written, sorted (each has a PDF twin).

    """
    paths = []
    for name, data in sorted(plot_bytes(rows, suites, tasks).items()):
        path = Path(out_dir) / name
        fsio.atomic_write_bytes(path, data)
        if path.suffix == ".png":
            paths.append(path)
    return paths
