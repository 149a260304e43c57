"""Leaderboard entry points: write ``results.csv``, ``leaderboard.md`` and plots; check freshness.

Data flows one way: ``<results>/runs/*.csv`` (one validated row per run, raw numbers) ->
:func:`~pebench.report.aggregate.aggregate` (one sorted DataFrame) ->
:func:`~pebench.report.markdown.render_markdown` and :func:`~pebench.report.plots.plot_bytes`
-> files written by :func:`generate`. All formatting happens in the report modules; the CSVs
stay raw. The public names of those modules are re-exported here for convenience.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pebench import results
from pebench.datasets import Suite, TaskSpec
from pebench.report.aggregate import SORT_KEYS, aggregate, records, registry
from pebench.report.markdown import HEADER, RANDOM_NOTE, RECON_NOTE, VARIES_NOTE, render_markdown
from pebench.report.plots import pareto_front, plot, plot_bytes
from pebench.report.reported import Cell, read_reported

__all__ = [
    "HEADER",
    "RANDOM_NOTE",
    "RECON_NOTE",
    "REPORTED_CSV",
    "SORT_KEYS",
    "VARIES_NOTE",
    "aggregate",
    "generate",
    "is_stale",
    "pareto_front",
    "plot",
    "render_markdown",
]

REPORTED_CSV = "reported.csv"


def _reported(results_dir: Path, suites: Mapping | None, tasks: Mapping | None) -> list[Cell]:
    """The published numbers in ``<results_dir>/reported.csv`` (none if there is no file)."""
    path = results_dir / REPORTED_CSV
    return read_reported(path, registry(suites, tasks)[1]) if path.exists() else []


def generate(
    results_dir: str | Path = "results",
    leaderboard_path: str | Path = "leaderboard.md",
    plots_dir: str | Path | None = None,
    *,
    suites: Mapping[str, Suite] | None = None,
    tasks: Mapping[str, TaskSpec] | None = None,
    skipped: list[str] | None = None,
) -> dict[str, Any]:
    """Aggregate the runs and write ``results.csv``, ``leaderboard.md`` and the plots.

    Everything is computed in memory first; if reading, validation or rendering fails nothing
    is written and the error propagates. Each file is written atomically.

    Args:
        results_dir: the results folder (reads ``runs/``, writes ``results.csv``).
        leaderboard_path: where ``leaderboard.md`` goes.
        plots_dir: folder for the PNGs; defaults to ``<results_dir>/plots``.
        suites: see :func:`~pebench.report.markdown.render_markdown`.
        tasks: see :func:`~pebench.report.markdown.render_markdown`.
        skipped: when given, bad result files are left out and their errors collected here
            (``pebench leaderboard --skip-bad``); otherwise the first one raises.

    Returns:
        ``{"results_csv": Path, "leaderboard": Path, "plots": [Path, ...]}``.

    Raises:
        ResultsError: a malformed result file or ``reported.csv`` (nothing written).

    """
    results_dir = Path(results_dir)
    plots_dir = results_dir / "plots" if plots_dir is None else Path(plots_dir)
    df = aggregate(results_dir, skipped)
    csv_text = results.rows_to_csv(records(df))
    reported = _reported(results_dir, suites, tasks)
    markdown = render_markdown(df, suites=suites, tasks=tasks, reported=reported)
    pngs = plot_bytes(df, suites, tasks)
    csv_path, md_path = results_dir / "results.csv", Path(leaderboard_path)
    results.atomic_write_text(csv_path, csv_text)
    plot_paths = []
    for name in sorted(pngs):
        results.atomic_write_bytes(plots_dir / name, pngs[name])
        plot_paths.append(plots_dir / name)
    results.atomic_write_text(md_path, markdown)
    return {"results_csv": csv_path, "leaderboard": md_path, "plots": plot_paths}


def is_stale(
    results_dir: str | Path,
    leaderboard_path: str | Path,
    *,
    suites: Mapping[str, Suite] | None = None,
    tasks: Mapping[str, TaskSpec] | None = None,
) -> bool:
    """Whether ``leaderboard_path`` differs from what the runs in ``results_dir`` render to now.

    Args:
        results_dir: the results folder.
        leaderboard_path: the committed ``leaderboard.md`` (a missing file is stale).
        suites: see :func:`~pebench.report.markdown.render_markdown`.
        tasks: see :func:`~pebench.report.markdown.render_markdown`.

    Returns:
        True when the file is missing or its text is not exactly the fresh rendering.

    """
    path = Path(leaderboard_path)
    reported = _reported(Path(results_dir), suites, tasks)
    fresh = render_markdown(aggregate(results_dir), suites=suites, tasks=tasks, reported=reported)
    if not path.exists():
        return True
    return path.read_text(encoding="utf-8") != fresh
