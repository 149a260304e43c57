r"""The paper tables as LaTeX that fits a page: two-level headers, best marked, width capped.

One ``table`` per suite, built from the leaderboard's :class:`~pebench.report.tables.SuiteTable`
objects (same rows, same numbers, same order as ``leaderboard.md``):

* **two-level header**: a suite whose tasks fall into several groups (VTAB-1k: Natural,
  Specialized, Structured) gets a first header row naming each group over its tasks, with
  ``\cmidrule`` under it;
* **best and second best** of every accuracy column (tasks, group means, suite means) in
  ``\textbf`` and ``\underline`` (ties share the mark);
* **width**: the ``tabular`` is scaled down to ``\linewidth`` when wider (graphicx'
  ``\resizebox`` with the natural width as the cap: a narrow table is never enlarged);
* **variants** (:data:`VARIANTS`): ``full`` (params, every task, group and suite means, 95% CI,
  rank (UB), tier) or ``narrow`` (params, the group means and the ranking mean, 95% CI, rank
  (UB), tier: no task columns, so it is scaled far less); **column selection** by key
  (:data:`COLUMN_KEYS`); long headers on two lines, columns 4pt apart.

Needs ``\usepackage{booktabs}`` and ``\usepackage{graphicx}``. Torch-free.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence

from pebench.datasets import Suite, TaskSpec
from pebench.errors import UserError
from pebench.report import columns as cols
from pebench.report.aggregate import RECONSTRUCTION, Row
from pebench.report.tables import SuiteTable, tables

#: the ranking suite mean only (the mean of group means on VTAB-style suites)
RANK_MEAN = cols.ColumnFamily(
    members=lambda table: table.mean_names[-1:],
    header=str,
    value=lambda e, name: e.means[name],
    fmt=cols.fixed(2),
)
#: ``--columns`` keys -> the columns they stand for (the method column is always first)
COLUMN_KEYS: dict[str, cols.Spec] = {
    "params": cols.PARAMS_EXCL,
    "params_incl": cols.PARAMS_INCL,
    "tasks": cols.TASKS,
    "groups": cols.GROUPS,
    "means": cols.MEANS,
    "rank_mean": RANK_MEAN,
    "ci": cols.INTERVAL,
    "rank": cols.UB_RANK,
    "rank_ci": cols.RANK_INTERVAL,
    "tier": cols.TIER,
    "lr": cols.SELECTED_LR,
    "seeds": cols.SEEDS,
}
#: the variants and their columns
VARIANTS: dict[str, tuple[str, ...]] = {
    "full": ("params", "tasks", "groups", "means", "ci", "rank", "tier"),
    "narrow": ("params", "groups", "rank_mean", "ci", "rank", "tier"),
}
#: the columns whose best and second best are marked (higher is better)
MARKED = (cols.TASKS, cols.GROUPS, cols.MEANS, RANK_MEAN)
PREAMBLE = "needs \\usepackage{booktabs} and \\usepackage{graphicx}"

#: characters of the Markdown cells that LaTeX text mode lacks, and what stands for them
_TEX_SYMBOLS = {
    "±": r"$\pm$",
    "†": r"$^\dagger$",
    "‡": r"$^\ddagger$",
    "—": "--",
    "–": "--",
    "·": r"$\cdot$",
    "⚑": r"$\triangleright$",
    "°": r"$^\circ$",
}
_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def one_line(value: str) -> str:
    r"""``value`` on one line: whitespace runs (line breaks too) one space, control chars dropped.

    A line break in a field from the rows would end a paragraph inside ``\caption`` (LaTeX
    refuses to compile) or end a ``%`` comment (the rest would be typeset).
    """
    return "".join(ch for ch in " ".join(value.split()) if ch.isprintable())


def tex(value: str) -> str:
    """Plain text as LaTeX text on one line: special characters escaped, symbols as commands."""
    out = "".join(_TEX_ESCAPES.get(ch, ch) for ch in one_line(value))
    for symbol, command in _TEX_SYMBOLS.items():
        out = out.replace(symbol, command)
    return out


def caption(table: SuiteTable) -> str:
    """What every row of the table shares, as plain text."""
    parts = [f"{k.replace('_', ' ')} {v}" for k, v in table.fixed.items()]
    if table.fixed.get("weights", "random") != "random" and any(e.random for e in table.entries):
        parts[list(table.fixed).index("weights")] += " (random init where marked †)"
    parts += [f"weights {k} = {w}" for k, w in table.weights_key.items()]
    mean = table.mean_names[-1]
    text = (
        f"{table.info.name}: top-1 test accuracy (%), mean ± sample std over seeds; ranked by "
        f"the {mean}, shown with its 95% CI (t, Welch-Satterthwaite df; seed and test-set "
        "error). Rank (UB): 1 + the rows significantly better (paired t, Holm over all pairs, "
        "alpha 0.05); tier: the best remaining row and the rows not significantly worse than it."
    )
    if table.stats is not None and table.stats.pairs:
        median = table.stats.resolvable()[0]
        if math.isfinite(median):
            text += (
                f" Differences below {median:.1f} pts are not resolvable at this budget (80% "
                "power, median over pairs)."
            )
        if not all(table.stats.claims):
            text += " (n)°: fewer than 5 seeds, no significance claim."
    return text + " " + "; ".join(parts) + "."


def column_specs(variant: str = "full", keys: Sequence[str] | None = None) -> list[cols.Spec]:
    """The columns of a table: the method and context columns, then ``keys`` or the variant's.

    Raises:
        UserError: an unknown variant or column key (one line naming what is allowed).
    """
    if variant not in VARIANTS:
        raise UserError(f"--variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    chosen = list(keys) if keys else list(VARIANTS[variant])
    if bad := [k for k in chosen if k not in COLUMN_KEYS]:
        raise UserError(f"--columns: unknown column {bad[0]!r}; allowed: {', '.join(COLUMN_KEYS)}")
    return [cols.METHOD, cols.CONTEXT_COLUMNS, *(COLUMN_KEYS[k] for k in chosen)]


#: the space on each side of a column (LaTeX's default is 6pt), set inside the table only
TABCOLSEP = "4pt"
#: a header longer than this (characters) is set on two lines, split at a space
HEADER_WIDTH = 10
#: the row-label mark of a reconstruction, short in LaTeX (the caption explains it)
RECON_MARK = r"$^\S$"


def header_cell(text: str) -> str:
    r"""A header as LaTeX: a long one on two lines (``\shortstack``), split near its middle."""
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    if len(text) <= HEADER_WIDTH or not spaces:
        return tex(text)
    cut = min(spaces, key=lambda i: abs(2 * i - len(text)))
    top, bottom = tex(text[:cut]), tex(text[cut + 1 :])
    return f"\\shortstack{{{top}\\\\{bottom}}}"


def label_cell(label: str) -> str:
    """A row label as LaTeX: the reconstruction mark shortened to :data:`RECON_MARK`."""
    if RECONSTRUCTION in label:
        return tex(label.replace(f" {RECONSTRUCTION}", "")) + RECON_MARK
    return tex(label)


def _score(raw: object) -> float:
    """The number a marked column compares: a task's mean over seeds, or the mean itself."""
    if isinstance(raw, list):
        return statistics.fmean(raw) if raw else math.nan
    return math.nan if raw is None else float(raw)  # type: ignore[arg-type]


def _marks(scores: list[float], digits: int) -> list[str]:
    """Per row: ``"best"``, ``"second"`` or "" (values compared as shown: ``digits`` decimals)."""
    shown = [round(s, digits) for s in scores if not math.isnan(s)]
    ranked = sorted(set(shown), reverse=True)
    best = ranked[0] if ranked else None
    second = ranked[1] if len(ranked) > 1 else None
    out = []
    for s in scores:
        v = None if math.isnan(s) else round(s, digits)
        out.append("best" if v is not None and v == best else "second" if v == second else "")
    return out


def _spans(table: SuiteTable, shown: list[tuple[cols.Spec, cols.Column]]) -> list[tuple]:
    """``(first column, last column, group)`` of each run of task columns of one group."""
    info = table.info
    if len(info.group_names) < 2:
        return []
    spans: list[list] = []
    task_headers = {cols.short_task(t): t for t in info.tasks}
    for i, (spec, col) in enumerate(shown, start=1):
        if spec is not cols.TASKS:
            continue
        group = info.groups.get(task_headers.get(col.header, ""), "")
        if spans and spans[-1][2] == group and spans[-1][1] == i - 1:
            spans[-1][1] = i
        else:
            spans.append([i, i, group])
    return [tuple(s) for s in spans]


def _header_rows(table: SuiteTable, shown: list[tuple[cols.Spec, cols.Column]]) -> list[str]:
    """The header: the group row with its rules (grouped suites with task columns), then names."""
    lines = []
    if spans := _spans(table, shown):
        cells: list[str] = []
        at = 1
        for first, last, group in spans:
            cells += [""] * (first - at)
            cells.append(
                f"\\multicolumn{{{last - first + 1}}}{{c}}{{{tex(cols.group_header(group))}}}"
            )
            at = last + 1
        cells += [""] * (len(shown) - at + 1)
        lines.append(" & ".join(cells) + " \\\\")
        lines.append(" ".join(f"\\cmidrule(lr){{{a}-{b}}}" for a, b, _ in spans))
    lines.append(" & ".join(header_cell(col.header) for _, col in shown) + " \\\\")
    return lines


def _body_rows(table: SuiteTable, shown: list[tuple[cols.Spec, cols.Column]]) -> list[str]:
    """One line per entry; best and second best of the accuracy columns marked."""
    cells = [
        [(label_cell if spec is cols.METHOD else tex)(col.cell(e)) for spec, col in shown]
        for e in table.entries
    ]
    for j, (spec, col) in enumerate(shown):
        if spec not in MARKED:
            continue
        digits = 1 if spec is cols.TASKS else 2  # as the cells show them
        for i, mark in enumerate(_marks([_score(col.raw(e)) for e in table.entries], digits)):
            if mark:
                cells[i][j] = ("\\textbf{%s}" if mark == "best" else "\\underline{%s}") % cells[i][
                    j
                ]
    return [" & ".join(row) + " \\\\" for row in cells]


def table_tex(table: SuiteTable, caption: str, specs: Sequence[cols.Spec]) -> str:
    """One suite's ``table`` environment."""
    shown = [(spec, col) for spec in specs for col in spec.expand(table)]
    text_columns = 1 + len(table.varying)
    align = "l" * text_columns + "r" * (len(shown) - text_columns)
    label = "tab:pebench-" + re.sub(r"[^A-Za-z0-9-]", "-", table.info.name)
    marked = any(spec in MARKED for spec, _ in shown) and len(table.entries) > 1
    note = " Best per accuracy column in bold, second best underlined." if marked else ""
    if any(RECONSTRUCTION in e.label for e in table.entries):
        note += " $^\\S$: pebench's reconstruction (the paper's architecture is not public)."
    return "\n".join(
        [
            "\\begin{table}",
            "\\centering",
            f"\\setlength{{\\tabcolsep}}{{{TABCOLSEP}}}",
            f"\\caption{{{tex(caption)}{note}}}",
            f"\\label{{{label}}}",
            "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%",
            f"\\begin{{tabular}}{{{align}}}",
            "\\toprule",
            *_header_rows(table, shown),
            "\\midrule",
            *_body_rows(table, shown),
            "\\bottomrule",
            "\\end{tabular}}",
            "\\end{table}",
        ]
    )


def to_latex(
    rows: Sequence[Row],
    suites: Mapping[str, Suite] | None = None,
    tasks: Mapping[str, TaskSpec] | None = None,
    variant: str = "full",
    columns: Sequence[str] | None = None,
) -> str:
    r"""Every suite's paper table as a LaTeX ``table`` (see the module docstring).

    Args:
        rows: the rows as :func:`pebench.report.aggregate.aggregate` returns them.
        suites: see :func:`pebench.report.markdown.render_markdown`.
        tasks: see :func:`pebench.report.markdown.render_markdown`.
        variant: ``"full"`` or ``"narrow"`` (:data:`VARIANTS`).
        columns: column keys (:data:`COLUMN_KEYS`) instead of the variant's.

    Returns:
        LaTeX source, one table per suite with a row; a suite's notes (rows of tasks outside
        its definition, stale rows ...: what ``leaderboard.md`` notes) as ``%`` comments first.

    Raises:
        UserError: an unknown variant or column key.
    """
    specs = column_specs(variant, columns)
    parts = [f"% generated by `pebench export --format latex`; {PREAMBLE}"]
    for table in tables(rows, suites, tasks):
        # the notes leaderboard.md gives (rows of tasks outside the suite, stale rows ...)
        notes = [f"% Note ({one_line(table.info.name)}): {one_line(n)}" for n in table.notes]
        body = [table_tex(table, caption(table), specs)] if table.entries else []
        if notes or body:
            parts.append("\n".join([*notes, *body]))
    return "\n\n".join(parts) + "\n"


__all__ = [
    "COLUMN_KEYS",
    "PREAMBLE",
    "VARIANTS",
    "caption",
    "column_specs",
    "table_tex",
    "tex",
    "to_latex",
]
