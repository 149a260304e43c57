"""Suite tables to figures: accuracy vs trainable parameters and vs peak memory, per suite.

Only rows with a complete suite mean are plotted (a suite without any gets a placeholder figure
saying so, so an old plot never outlives its data); the Pareto front is drawn over the
pretrained rows. Output bytes are deterministic: fixed size and dpi, no software/date metadata.
Figures are drawn on matplotlib's Agg canvas; pyplot is never imported.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pebench import results
from pebench.datasets import Suite, TaskSpec
from pebench.report.columns import MIB
from pebench.report.tables import SuiteTable, tables

PLOT_DPI = 100
#: symlog threshold of the params axis, in M: linear below it, so a 0-parameter method shows
PARAMS_LINTHRESH = 0.01
#: (label, x, y, random-init backbone)
Point = tuple[str, float, float, bool]


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


def _draw_points(ax: Any, points: list[Point]) -> None:
    """Scatter the points, the Pareto front of the pretrained ones highlighted, all labelled."""
    pretrained = [i for i, p in enumerate(points) if not p[3]]
    front = [pretrained[i] for i in pareto_front([points[i][1:3] for i in pretrained])]
    others = [i for i in range(len(points)) if i not in front]
    if others:
        ax.scatter(
            [points[i][1] for i in others],
            [points[i][2] for i in others],
            c="0.55",
            marker="o",
            s=28,
            label="other rows",
        )
    if front:
        ax.plot(
            [points[i][1] for i in front],
            [points[i][2] for i in front],
            color="tab:red",
            marker="*",
            markersize=12,
            drawstyle="steps-post",
            label="Pareto front (best accuracy at ≤ cost; pretrained rows)",
        )
    for name, x, y, _ in points:
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.legend(fontsize=8, loc="lower right")
    ax.margins(x=0.15, y=0.12)


def _scatter_png(
    table: SuiteTable, title: str, xlabel: str, points: list[Point], symlog: bool
) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5.0), dpi=PLOT_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rank_name = table.mean_names[-1]
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(f"{table.info.name} {rank_name} accuracy (%)", fontsize=9)
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
        )
    else:
        _draw_points(ax, points)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PLOT_DPI, metadata={"Software": None})
    return buf.getvalue()


def _suite_pngs(table: SuiteTable) -> dict[str, bytes]:
    """The two figures of one suite, by file name."""
    done = [e for e in table.entries if not math.isnan(e.rank)]
    name = table.info.name
    params = [(e.label, e.params_method / 1e6, e.rank, e.random) for e in done]
    kinds = sorted({k for e in done for k in e.mem})
    # the memory kind measured for the most rows (ties: the first by name)
    kind = max(kinds, key=lambda k: sum(k in e.mem for e in done)) if kinds else ""
    mem = [(e.label, e.mem[kind] / MIB, e.rank, e.random) for e in done if kind in e.mem]
    return {
        f"{_safe(name)}_acc_vs_params.png": _scatter_png(
            table,
            f"{name}: accuracy vs trainable parameters",
            "trainable params excl. head (M); symlog axis, linear below "
            f"{PARAMS_LINTHRESH} M so 0-parameter methods are visible",
            params,
            symlog=True,
        ),
        f"{_safe(name)}_acc_vs_memory.png": _scatter_png(
            table,
            f"{name}: accuracy vs peak training memory",
            f"peak memory (MiB, {kind or 'not measured'}; max over runs)",
            mem,
            symlog=False,
        ),
    }


def plot_bytes(
    df: pd.DataFrame, suites: Mapping[str, Suite] | None, tasks: Mapping[str, TaskSpec] | None
) -> dict[str, bytes]:
    """Every suite's figures as PNG bytes, by file name (nothing written).

    Args:
        df: rows as returned by :func:`pebench.report.aggregate.aggregate`.
        suites: see :func:`pebench.report.markdown.render_markdown`.
        tasks: see :func:`pebench.report.markdown.render_markdown`.

    Returns:
        ``{file name: PNG bytes}``.

    """
    out: dict[str, bytes] = {}
    for table in tables(df, suites, tasks):
        out.update(_suite_pngs(table))
    return out


def plot(
    df: pd.DataFrame,
    out_dir: str | Path,
    *,
    suites: Mapping[str, Suite] | None = None,
    tasks: Mapping[str, TaskSpec] | None = None,
) -> list[Path]:
    """Draw ``<suite>_acc_vs_params.png`` and ``<suite>_acc_vs_memory.png`` per suite.

    Args:
        df: rows as returned by :func:`pebench.report.aggregate.aggregate`.
        out_dir: folder for the PNGs (created).
        suites: see :func:`pebench.report.markdown.render_markdown`.
        tasks: see :func:`pebench.report.markdown.render_markdown`.

    Returns:
        The paths written, sorted.

    """
    pngs = plot_bytes(df, suites, tasks)
    paths = []
    for name in sorted(pngs):
        path = Path(out_dir) / name
        results.atomic_write_bytes(path, pngs[name])
        paths.append(path)
    return paths
