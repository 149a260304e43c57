"""Published ("reported") numbers: read ``results/reported.csv`` and render its own tables.

Reported numbers come from papers, repositories and other benchmarks, under their own budgets,
seeds, data lineages and — often — test-set epoch selection. They are shown in a separate
section of ``leaderboard.md``, one table per source table, and never enter a measured table,
mean or plot. Every row names its source and how that source selected its epoch.

The CSV is tidy: one published cell per line (a method's top-1 on one task in one source table).
Suite means are recomputed here from the per-task cells, with the same conventions as the
measured tables (mean of tasks; VTAB-style suites also the mean of group means), and only when
every task of the suite has a value.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pebench.datasets import Suite, TaskSpec
from pebench.report import mdtable
from pebench.report.mdtable import Markdown, prose, text
from pebench.results import ResultsError

COLUMNS = (
    "table",
    "method",
    "pebench_method",
    "task",
    "top1",
    "params_m",
    "params_convention",
    "backbone",
    "weights",
    "selection",
    "data_format",
    "source_kind",
    "source",
)
SOURCE_KINDS = ("paper", "repository", "benchmark")
TEST_SELECTION_NOTE = (
    "§ the source picked the reported epoch on the **test** set: optimistic, not comparable with "
    "pebench's validation-selected, last-epoch numbers"
)


class ReportedError(ResultsError):
    """A malformed reported-numbers file; the message names the file, line and column."""


@dataclass(frozen=True)
class ReportedCell:
    """One published number (a row of the CSV, parsed)."""

    table: str
    method: str
    pebench_method: str
    task: str
    top1: float
    params_m: float
    params_convention: str
    backbone: str
    weights: str
    selection: str
    data_format: str
    source_kind: str
    source: str
    top1_text: str = ""  # as published (keeps its digits)


def _number(value: str, col: str, where: str, hi: float, empty_ok: bool) -> float:
    """``value`` as a float in ``[0, hi]`` (NaN for an allowed empty cell)."""
    if value == "" and empty_ok:
        return math.nan
    try:
        x = float(value)
    except ValueError:
        raise ReportedError(f"{where}, column {col!r}: {value!r} is not a number") from None
    if not 0.0 <= x <= hi:
        raise ReportedError(f"{where}, column {col!r}: {x} outside [0.0, {hi}]")
    return x


def read_reported(path: str | Path, tasks: Mapping[str, TaskSpec]) -> list[ReportedCell]:
    """Read and check ``path``.

    Args:
        path: the CSV (columns :data:`COLUMNS`).
        tasks: known tasks; every row's ``task`` must be one of them.

    Raises:
        ReportedError: naming the file, the line and the column: a bad header, an unknown
            task, a top-1 outside [0, 100], a bad number, an unknown ``source_kind``, an empty
            source, or the same (table, method, task) twice.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ReportedError(f"{path}: unreadable ({err})") from err
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ReportedError(f"{path}: header must be {','.join(COLUMNS)}")
    cells: list[ReportedCell] = []
    seen: dict[tuple[str, str, str], int] = {}
    for line, raw in enumerate(reader, start=2):
        where = f"{path}, line {line}"
        if None in raw or any(v is None for v in raw.values()):
            raise ReportedError(f"{where}: expected {len(COLUMNS)} fields")
        if raw["task"] not in tasks:
            raise ReportedError(f"{where}, column 'task': unknown task {raw['task']!r}")
        if raw["source_kind"] not in SOURCE_KINDS:
            raise ReportedError(
                f"{where}, column 'source_kind': {raw['source_kind']!r} not in {SOURCE_KINDS}"
            )
        for col in ("table", "method", "source"):
            if not raw[col].strip():
                raise ReportedError(f"{where}, column {col!r}: empty")
        values: dict = {c: raw[c].strip() for c in COLUMNS}
        values["top1_text"] = values["top1"]
        values["top1"] = _number(values["top1"], "top1", where, 100.0, empty_ok=False)
        values["params_m"] = _number(values["params_m"], "params_m", where, 1e6, empty_ok=True)
        key = (raw["table"], raw["method"], raw["task"])
        if key in seen:
            raise ReportedError(f"{where}: {key} already given on line {seen[key]}")
        seen[key] = line
        cells.append(ReportedCell(**values))
    return cells


def _fmt(x: float, digits: int = 2) -> str:
    return "—" if math.isnan(x) else f"{x:.{digits}f}"


def _table(
    name: str, cells: list[ReportedCell], suite: Suite, tasks: Mapping[str, TaskSpec]
) -> list[str]:
    groups = list(dict.fromkeys(tasks[t].group for t in suite.tasks))
    vtab = suite.aggregate == "vtab"
    means = (["mean of groups", "mean of tasks"] + groups) if vtab else ["mean of tasks"]
    head = ["method", "pebench method", "backbone · weights", "params (M)", "selection"]
    head += [t.split("/", 1)[1] for t in suite.tasks] + means + ["source"]
    body, test_selected = [], False
    for method in dict.fromkeys(c.method for c in cells):
        mine = {c.task: c for c in cells if c.method == method}
        first = next(iter(mine.values()))
        per_task = [mine[t].top1 if t in mine else math.nan for t in suite.tasks]
        texts = [mine[t].top1_text if t in mine else "—" for t in suite.tasks]
        complete = not any(math.isnan(v) for v in per_task)
        values: list[float] = []
        if vtab:
            gm = [
                sum(v for t, v in zip(suite.tasks, per_task, strict=True) if tasks[t].group == g)
                / sum(tasks[t].group == g for t in suite.tasks)
                for g in groups
            ]
            values = [sum(gm) / len(gm), sum(per_task) / len(per_task), *gm]
        else:
            values = [sum(per_task) / len(per_task)]
        if not complete:
            values = [math.nan] * len(values)
        selection = first.selection or "unstated"
        if "test" in selection:
            selection += " §"
            test_selected = True
        params = _fmt(first.params_m, 3)
        if first.params_convention:
            params += f" ({first.params_convention})"
        body.append(
            [
                method,
                Markdown(f"`{text(first.pebench_method)}`") if first.pebench_method else "—",
                f"{first.backbone} · {first.weights}",
                params,
                selection,
                *texts,
                *[_fmt(v) for v in values],
                prose(f"{first.source} ({first.source_kind})"),  # a source's code spans kept
            ]
        )
    lines = [f"### {text(suite.name)}: reported, table `{text(name)}`", ""]
    lines += mdtable.table(head, body)
    if test_selected:
        lines += ["", TEST_SELECTION_NOTE]
    return lines + [""]


def render_reported(
    cells: list[ReportedCell],
    suites: Mapping[str, Suite],
    tasks: Mapping[str, TaskSpec],
    files: Sequence[str] = ("results/reported.csv",),
) -> list[str]:
    """Markdown lines of the "Reported numbers" section (empty when there are no cells).

    Args:
        cells: the published numbers.
        suites: the registered suites.
        tasks: the registered tasks.
        files: the files the cells were read from, as the section names them.

    """
    if not cells:
        return []
    named = ", ".join(f"`{text(f)}`" for f in files)
    lines = [
        "# Reported numbers (published; not measured by pebench)",
        "",
        f"Copied from papers, repositories and other benchmarks ({named}, one "
        "published cell per line with its source). Their budgets, seeds, data lineage and epoch "
        "selection differ from pebench's and from each other's, so they are never mixed with the "
        "measured tables above. Means are recomputed from the per-task cells.",
        "",
    ]
    by_suite: dict[str, dict[str, list[ReportedCell]]] = {}
    for c in cells:
        by_suite.setdefault(tasks[c.task].suite, {}).setdefault(c.table, []).append(c)
    for suite_name in sorted(by_suite):
        for table, group in by_suite[suite_name].items():
            lines += _table(table, group, suites[suite_name], tasks)
    return lines


__all__ = ["COLUMNS", "ReportedCell", "ReportedError", "read_reported", "render_reported"]
