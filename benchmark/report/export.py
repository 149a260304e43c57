r"""Paper tables: the leaderboard's suite tables as LaTeX (booktabs), Markdown, or a tidy CSV.

Every format is built from the same :class:`~pebench.report.tables.SuiteTable` objects as
``leaderboard.md`` (same rows kept, same grouping by configuration, backbone, weights, budget,
data format and results folder, same ranking), so an exported number is the leaderboard's
number:

* ``latex``: one ``table`` per suite with booktabs rules, a two-level header for grouped suites,
  the best and second best of each accuracy column marked and a width capped at the line
  (:mod:`pebench.report.latex`: variants ``full`` and ``narrow``, column selection);
* ``markdown``: the same tables as Markdown;
* ``csv``: tidy, one line per (configuration, task) with the mean and sample std over seeds
  (top-1 in percent), the seeds, the parameter counts and the selected hyper-parameters, and the
  row's suite-level statistics (ranking mean, its 95 % interval, rank (UB), rank interval, tier).

The tables carry the leaderboard's uncertainty: the suite mean's 95 % interval, rank (UB) and
tier, and a caption that says what difference the table can resolve and the rule behind the
ranks.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from pebench.datasets import Suite, TaskSpec
from pebench.report import columns as cols
from pebench.report import mdtable
from pebench.report.aggregate import CONTEXT, SOURCE, Row, peak_memory
from pebench.report.latex import caption, to_latex
from pebench.report.markdown import inert_cell
from pebench.report.mdtable import text
from pebench.report.tables import SuiteTable, tables

FORMATS = ("latex", "markdown", "csv")
#: the tidy CSV's columns: the grouping key, then the numbers
TIDY_COLUMNS = (
    "suite",
    "task",
    "task_group",
    "label",
    "method",
    "preset",
    "method_config",
    "backbone",
    "weights",
    "budget",
    "data_format",
    SOURCE,
    "n_seeds",
    "seeds",
    "top1_pct_mean",
    "top1_pct_std",
    "params_method",
    "params_head",
    "lr",
    "weight_decay",
    "selection_edge",
    "peak_mem_bytes",
    "peak_mem_kind",
    "train_images_per_s",
    "eval_images_per_s",
    "suite_mean_pct",
    "suite_ci_lo",
    "suite_ci_hi",
    "rank_ub",
    "rank_lo",
    "rank_hi",
    "tier",
    "significance_claims",
)


def _mean(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return statistics.fmean(vals) if vals else math.nan


def _count(value: int | None) -> float:
    return math.nan if value is None else float(value)


# ------------------------------------------------------------------------------- tidy --
def tidy(
    rows: Sequence[Row],
    suites: Mapping[str, Suite] | None = None,
    tasks: Mapping[str, TaskSpec] | None = None,
) -> list[dict[str, Any]]:
    """One row per (configuration, task) of every suite table: the tidy export.

    Args:
        rows: the rows as :func:`pebench.report.aggregate.aggregate` returns them.
        suites: see :func:`pebench.report.markdown.render_markdown`.
        tasks: see :func:`pebench.report.markdown.render_markdown`.

    Returns:
        Dicts keyed by :data:`TIDY_COLUMNS` (in that order), suites by name, rows in
        leaderboard order, tasks in suite order.

    """
    out: list[dict[str, Any]] = []
    for table in tables(rows, suites, tasks):
        for e in table.entries:
            by_task: dict[str, list[dict]] = {}
            for r in sorted(e.runs, key=lambda r: (r["seed"], r["run_id"])):
                by_task.setdefault(r["task"], []).append(r)
            for task in table.info.tasks:
                if task in by_task:
                    row = _tidy_row(table, e, task, by_task[task])
                    out.append({c: row[c] for c in TIDY_COLUMNS})
    return out


def _tidy_row(table: SuiteTable, e: Any, task: str, runs: list[dict]) -> dict[str, Any]:
    values = e.task_values[task]
    mem = peak_memory(runs)
    kind = next(iter(mem)) if len(mem) == 1 else ";".join(sorted(mem))
    first = runs[0]
    return {
        "suite": table.info.name,
        "task": task,
        "task_group": table.info.groups.get(task, first["task_group"]),
        "label": e.label,
        "method": first["method"],
        "preset": first["preset"],
        "method_config": first["method_config"],
        **{c: e.context[c] for c in CONTEXT},
        "n_seeds": len(values),
        "seeds": " ".join(str(r["seed"]) for r in runs),
        "top1_pct_mean": statistics.fmean(values),
        "top1_pct_std": statistics.stdev(values) if len(values) > 1 else math.nan,
        "params_method": _mean([_count(r["params_method"]) for r in runs]),
        "params_head": _mean([_count(r["params_head"]) for r in runs]),
        "lr": first["lr"],
        "weight_decay": first["weight_decay"],
        "selection_edge": first["selection_edge"],
        "peak_mem_bytes": next(iter(mem.values())) if len(mem) == 1 else math.nan,
        "peak_mem_kind": kind,
        "train_images_per_s": _mean([r["train_images_per_s"] for r in runs]),
        "eval_images_per_s": _mean([r["eval_images_per_s"] for r in runs]),
        **_suite_stats(e),
    }


def _suite_stats(e: Any) -> dict[str, Any]:
    """The row's suite-level statistics (NaN/0 without a complete suite mean)."""
    s = e.stats
    ranked = s is not None and s.runs is not None
    return {
        "suite_mean_pct": e.rank,
        "suite_ci_lo": s.interval.lo if ranked else math.nan,
        "suite_ci_hi": s.interval.hi if ranked else math.nan,
        "rank_ub": s.ub_rank if ranked else 0,
        "rank_lo": s.rank_lo if ranked else 0,
        "rank_hi": s.rank_hi if ranked else 0,
        "tier": s.tier if ranked else 0,
        "significance_claims": bool(ranked and s.claims),
    }


def _csv_value(value: Any) -> Any:
    """A tidy value as its CSV cell: NaN and None empty, text inert, numbers as Python prints."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return inert_cell(value) if isinstance(value, str) else value


def to_csv(
    rows: Sequence[Row],
    suites: Mapping[str, Suite] | None = None,
    tasks: Mapping[str, TaskSpec] | None = None,
) -> str:
    """The tidy export (:func:`tidy`) as CSV text, text cells inert.

    A text value a spreadsheet would run as a formula gets a leading ``'``
    (:func:`~pebench.report.markdown.inert_cell`); a missing number is an empty cell.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TIDY_COLUMNS)
    writer.writerows([_csv_value(v) for v in r.values()] for r in tidy(rows, suites, tasks))
    return buf.getvalue()


# ---------------------------------------------------------------------------- tables --
def paper_table(table: SuiteTable) -> tuple[list[str], list[list[str]]]:
    """One suite's paper table as cell texts, headed as in ``leaderboard.md``: header, body."""
    shown = cols.expand(cols.PAPER_COLUMNS, table)
    return [c.header for c in shown], [[c.cell(e) for c in shown] for e in table.entries]


def to_markdown(
    rows: Sequence[Row],
    suites: Mapping[str, Suite] | None = None,
    tasks: Mapping[str, TaskSpec] | None = None,
) -> str:
    """Every suite's paper table as Markdown (a heading, the caption, the table)."""
    lines = ["<!-- generated by `pebench export --format markdown` -->", ""]
    for table in tables(rows, suites, tasks):
        if not table.entries:
            continue
        lines += [f"## {text(table.info.name)}", "", text(caption(table)), ""]
        lines += mdtable.table(*paper_table(table))
        lines.append("")
    return "\n".join(lines)


def export(
    rows: Sequence[Row],
    fmt: str,
    suites: Mapping[str, Suite] | None = None,
    tasks: Mapping[str, TaskSpec] | None = None,
    variant: str = "full",
    columns: Sequence[str] | None = None,
) -> str:
    """``rows`` exported as ``fmt`` (one of :data:`FORMATS`); LaTeX by ``variant`` and ``columns``.

    Raises:
        UserError: an unknown LaTeX variant or column key.
    """
    if fmt == "latex":
        return to_latex(rows, suites, tasks, variant, columns)
    writer = {"markdown": to_markdown, "csv": to_csv}[fmt]
    return writer(rows, suites, tasks)
