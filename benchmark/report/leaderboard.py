"""Leaderboard entry points: write ``results.csv``, ``leaderboard.md`` and plots; check freshness.

Data flows one way: ``<results>/runs/*.csv`` of one or more results folders (one validated row
per run, raw numbers) -> :func:`~pebench.report.aggregate.aggregate` (the rows as plain dicts,
sorted) -> the suite tables, built once (:func:`~pebench.report.tables.tables`) ->
:func:`~pebench.report.markdown.render_markdown` and :func:`~pebench.report.plots.plot_bytes`
-> files written as one unit by :func:`generate` (:mod:`pebench.report.commit`). All formatting
happens in the report modules; the CSVs stay raw. Where the outputs go by default is
:func:`pebench.report.sources.outputs`. The public names of those modules are re-exported here
for convenience.

Verified submissions (``submissions=``, :mod:`pebench.report.submissions`) join the rows as
more results folders, their rows marked ✓ and footnoted; they never choose where the outputs go.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pebench import results
from pebench.datasets import Suite, TaskSpec
from pebench.report.aggregate import SORT_KEYS, SOURCE, Row, aggregate, suites_and_tasks
from pebench.report.commit import JOURNAL, recover, tmp_pattern, write_unit
from pebench.report.markdown import (
    HEADER,
    RANDOM_NOTE,
    RECON_NOTE,
    VARIES_NOTE,
    header,
    inert_cell,
    render_markdown,
)
from pebench.report.plots import NAME_PATTERN, pareto_front, plot, plot_bytes
from pebench.report.reported import ReportedCell, ReportedError, read_reported
from pebench.report.sources import Outputs, ResultsArg, display, outputs, results_dirs, runs_glob
from pebench.report.submissions import VERIFIED, Submission, read_submissions, screen
from pebench.report.tables import SuiteTable, tables

__all__ = [
    "HEADER",
    "RANDOM_NOTE",
    "RECON_NOTE",
    "REPORTED_CSV",
    "SORT_KEYS",
    "VARIES_NOTE",
    "aggregate",
    "generate",
    "header",
    "is_stale",
    "outputs",
    "pareto_front",
    "plot",
    "render_markdown",
]

REPORTED_CSV = "reported.csv"


def _reported(
    dirs: Sequence[Path], start: Path, suites: Mapping | None, tasks: Mapping | None
) -> tuple[list[ReportedCell], list[str]]:
    """The published numbers of every ``<dir>/reported.csv`` and those files' display names.

    The same cell in two files is kept once; the same (table, method, task) with another value
    is refused.
    """
    cells: dict[tuple[str, str, str], ReportedCell] = {}
    where: dict[tuple[str, str, str], Path] = {}
    files = []
    for d in dirs:
        path = d / REPORTED_CSV
        if not path.exists():
            continue
        files.append(display(path, start))
        for cell in read_reported(path, suites_and_tasks(suites, tasks)[1]):
            key = (cell.table, cell.method, cell.task)
            if key in cells and cells[key] != cell:
                raise ReportedError(
                    f"{path}: {key} differs from the same cell in {where[key]}; keep the "
                    "published numbers in one reported.csv"
                )
            cells.setdefault(key, cell)
            where.setdefault(key, path)
    return list(cells.values()), files


def read_rows(
    dirs: Sequence[Path],
    skipped: list[str] | None = None,
    submissions: str | Path | None = None,
) -> tuple[list[Row], list[Submission]]:
    """The rows of ``dirs`` and of the shown submissions (each its own folder), and those read.

    Args:
        dirs: the results folders.
        skipped: see :func:`generate` (only ``dirs`` can have bad files: a shown submission's
            rows were read whole).
        submissions: the submissions folder, or None for none.

    Returns:
        ``(rows as aggregate() returns them, every submission found)``.

    Raises:
        ResultsError: a malformed result file of ``dirs``, or no folder ``submissions``.

    """
    if submissions is None:
        return aggregate(dirs, skipped), []
    found = read_submissions(submissions)
    rows = aggregate(dirs, skipped)
    found = screen(found, rows)
    extra = [s.results for s in found if s.shown and s.results is not None]
    if extra:  # the shown submissions' rows join, each under its own folder, sorted as one
        rows = aggregate([*dirs, *extra], None if skipped is None else [])
    return rows, found


def marked_tables(
    rows: Sequence[Row],
    suites: Mapping[str, Suite] | None,
    tasks: Mapping[str, TaskSpec] | None,
    found: Sequence[Submission] = (),
) -> list[SuiteTable]:
    """The suite tables of ``rows``, the rows of each shown submission marked ✓."""
    suite_tables = tables(rows, suites, tasks)
    verified = {str(s.results) for s in found if s.shown}
    for table in suite_tables:
        for e in table.entries:
            if e.context[SOURCE] in verified:
                e.label += f" {VERIFIED}"
    return suite_tables


def render(
    rows: Sequence[Row],
    dirs: Sequence[Path],
    leaderboard_path: Path,
    suites: Mapping[str, Suite] | None,
    tasks: Mapping[str, TaskSpec] | None,
    suite_tables: Sequence[SuiteTable] | None = None,
    found: Sequence[Submission] = (),
) -> str:
    """The text of ``leaderboard.md`` at ``leaderboard_path`` for the ``rows`` of ``dirs``.

    ``found`` are the submissions read (:func:`read_rows`): the published numbers come from
    ``dirs`` only, and the first line names the shown submissions' run files after theirs.
    """
    start = Path(os.path.abspath(leaderboard_path)).parent
    reported, files = _reported(dirs, start, suites, tasks)
    if suite_tables is None:
        suite_tables = marked_tables(rows, suites, tasks, found)
    read_from = [*dirs, *(s.results for s in found if s.shown and s.results is not None)]
    return render_markdown(
        rows,
        suites=suites,
        tasks=tasks,
        reported=reported,
        runs=runs_glob(results_dirs(read_from), leaderboard_path),
        reported_files=files,
        suite_tables=suite_tables,
        submissions=found,
    )


def _gappy_counts(rows: Sequence[Row]) -> set[str]:
    """The integer columns with a missing value in some row (``results.csv`` writes them as floats).

    ``results.csv`` was first written through a pandas frame, where such a column turns float
    (``400.0``); the committed file has that format, and it is kept so the file regenerates
    byte for byte.
    """
    ints = [k for k, kind in results.SCHEMA.items() if kind in ("int", "count")]
    return {k for k in ints if any(r[k] is None for r in rows)}


def results_csv(rows: Sequence[Row]) -> str:
    """The raw rows as ``results.csv``, in the row schema.

    Rows from several folders get a leading ``results_dir`` column (the same run id may then
    appear once per folder). Text values a spreadsheet would run as a formula are written
    inert (:func:`~pebench.report.markdown.inert_cell`). An integer column with a missing value
    is written as floats (``400.0``: :func:`_gappy_counts`).
    """
    text_columns = {k for k, kind in results.SCHEMA.items() if kind == "str"}
    gappy = _gappy_counts(rows)

    def cell(k: str, v: Any) -> Any:
        if k in text_columns and isinstance(v, str):
            return inert_cell(v)
        return float(v) if k in gappy and v is not None else v

    written = [{k: cell(k, v) for k, v in r.items()} for r in rows]
    if len({r[SOURCE] for r in written}) <= 1:
        return results.rows_to_csv({k: v for k, v in r.items() if k != SOURCE} for r in written)
    body = io.StringIO()
    writer = csv.writer(body, lineterminator="\n")
    for line in csv.reader(io.StringIO(results.rows_to_csv([]))):
        writer.writerow([SOURCE, *line])
    data = results.rows_to_csv({k: v for k, v in r.items() if k != SOURCE} for r in written)
    for r, line in zip(written, list(csv.reader(io.StringIO(data)))[1:], strict=True):
        writer.writerow([r[SOURCE], *line])
    return body.getvalue()


def _writes(out: Outputs) -> Callable[[Path], bool]:
    """Which files a leaderboard write to ``out`` may replace or delete (a journal may name).

    Its ``results.csv``, its ``leaderboard.md`` and the figures in its plots folder.
    """
    fixed = {Path(os.path.abspath(out.results_csv)), Path(os.path.abspath(out.leaderboard))}
    plots = Path(os.path.abspath(out.plots))

    def allowed(path: Path) -> bool:
        if path in fixed:
            return True
        return (
            path.parent == plots
            and path.suffix in (".png", ".pdf")
            and fnmatch.fnmatchcase(path.name, NAME_PATTERN)
            and not path.name.startswith(".")
        )

    return allowed


def _litter(out: Outputs) -> list[tuple[Path, str]]:
    """Where killed writes of older versions may have left temp files."""
    return [(out.plots, tmp_pattern(NAME_PATTERN)), (out.home, tmp_pattern(out.results_csv.name))]


def generate(
    results_dir: ResultsArg = "results",
    leaderboard_path: str | Path | None = None,
    plots_dir: str | Path | None = None,
    *,
    suites: Mapping[str, Suite] | None = None,
    tasks: Mapping[str, TaskSpec] | None = None,
    skipped: list[str] | None = None,
    submissions: str | Path | None = None,
) -> dict[str, Any]:
    """Aggregate the runs and write ``results.csv``, ``leaderboard.md`` and the plots.

    Everything is computed in memory first; if reading, validation or rendering fails nothing
    is written and the error propagates. The files are then written as one unit
    (:func:`pebench.report.commit.write_unit`): a kill or a full disk at any point leaves the
    previous set or the new one, never a mix. Figure files of the previous set that the new
    one lacks (a suite gone, a memory kind gone) are deleted with it.

    Args:
        results_dir: the results folder (reads ``runs/``), or several (rows merged, each
            folder's rows kept apart: see :mod:`pebench.report.sources`).
        leaderboard_path: where ``leaderboard.md`` goes (default:
            :func:`pebench.report.sources.outputs`).
        plots_dir: folder for the figures; defaults to ``<home>/plots``.
        suites: see :func:`~pebench.report.markdown.render_markdown`.
        tasks: see :func:`~pebench.report.markdown.render_markdown`.
        skipped: when given, bad result files are left out and their errors collected here
            (``pebench leaderboard --skip-bad``); otherwise the first one raises.
        submissions: a folder of verified submissions (``pebench verify --out``): each shown
            one (:mod:`pebench.report.submissions`) is read as one more results folder, its
            rows marked ✓ and footnoted; the others are listed under "Submissions not shown".
            It never changes where the outputs go. None: no submissions.

    Returns:
        ``{"results_csv": Path, "leaderboard": Path, "plots": [PNG paths],
        "plots_pdf": [PDF paths]}``.

    Raises:
        ResultsError: a malformed result file or ``reported.csv``, or no folder
            ``submissions`` (nothing written; a bad submission is only left out).
        WriteError: the files could not be written (nothing changed).

    """
    dirs = results_dirs(results_dir)
    out = outputs(dirs, leaderboard_path, plots_dir)
    rows, found = read_rows(dirs, skipped, submissions)
    # once: the markdown and the figures share them
    suite_tables = marked_tables(rows, suites, tasks, found)
    markdown = render(rows, dirs, out.leaderboard, suites, tasks, suite_tables, found)
    figures = plot_bytes(rows, suites, tasks, suite_tables)
    files: dict[Path, bytes] = {out.results_csv: results_csv(rows).encode("utf-8")}
    files.update({out.plots / name: figures[name] for name in sorted(figures)})
    files[out.leaderboard] = markdown.encode("utf-8")
    stale = [
        p
        for p in sorted(out.plots.glob(NAME_PATTERN))
        if p.suffix in (".png", ".pdf") and p.name not in figures and not p.name.startswith(".")
    ]
    write_unit(out.home, files, stale, _litter(out), _writes(out))
    names = sorted(figures)
    return {
        "results_csv": out.results_csv,
        "leaderboard": out.leaderboard,
        "plots": [out.plots / n for n in names if n.endswith(".png")],
        "plots_pdf": [out.plots / n for n in names if n.endswith(".pdf")],
    }


def recover_outputs(results_dir: ResultsArg, leaderboard_path: str | Path | None = None) -> None:
    """Complete (or undo) a leaderboard write a kill interrupted, as the next write would.

    Only a journal naming this report's own outputs is followed (see
    :mod:`pebench.report.commit`); any other is refused with nothing touched.

    Raises:
        WriteError: a journal that is not one of these outputs', or a folder that cannot be
            written.
    """
    out = outputs(results_dirs(results_dir), leaderboard_path)
    litter = [*_litter(out), (out.leaderboard.parent, tmp_pattern(out.leaderboard.name))]
    recover(out.home, litter, _writes(out))


def is_stale(
    results_dir: ResultsArg,
    leaderboard_path: str | Path | None = None,
    *,
    suites: Mapping[str, Suite] | None = None,
    tasks: Mapping[str, TaskSpec] | None = None,
    submissions: str | Path | None = None,
) -> bool:
    """Whether ``leaderboard_path`` differs from what the runs in ``results_dir`` render to now.

    Writes nothing, and recovers nothing: a write that a kill interrupted (its journal is still
    there) makes the outputs stale; the next ``pebench leaderboard`` completes it.

    Args:
        results_dir: the results folder, or several.
        leaderboard_path: the committed ``leaderboard.md`` (a missing file is stale; default:
            :func:`pebench.report.sources.outputs`).
        suites: see :func:`~pebench.report.markdown.render_markdown`.
        tasks: see :func:`~pebench.report.markdown.render_markdown`.
        submissions: see :func:`generate`.

    Returns:
        True when the file is missing or its text is not exactly the fresh rendering.

    """
    dirs = results_dirs(results_dir)
    out = outputs(dirs, leaderboard_path)
    rows, found = read_rows(dirs, submissions=submissions)
    fresh = render(rows, dirs, out.leaderboard, suites, tasks, found=found)
    if (out.home / JOURNAL).exists() or not out.leaderboard.exists():
        return True
    return out.leaderboard.read_text(encoding="utf-8") != fresh
