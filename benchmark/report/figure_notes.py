"""What a figure says besides its points: rows left out, whose point is whose, what bars measure.

Which rows a figure leaves out, the results folder (or other context) that tells two points of
one label apart, what its bars and its memory axis measure. Shared by the accuracy-vs-cost
figures (:mod:`pebench.report.plots`) and the uncertainty figures
(:mod:`pebench.report.stat_plots`). Torch-free.
"""

from __future__ import annotations

import math
from pathlib import Path

from pebench.report.aggregate import SOURCE, Entry
from pebench.report.tables import SuiteTable

#: rows named in an omission note; more are counted
NAMED = 6
#: the legend text of the figures' error bars: not the table's ± (per-task seed std)
BAR_LEGEND = "95% interval of the suite mean (not the table's ± per-task seed std)"
#: what a CPU memory kind measures, said on the memory figures
MEMORY_NOTES = {
    "cpu_state": (
        "cpu_state: the process's peak resident memory above what it held once the backbone and "
        "data were loaded (activations, gradients, optimizer state, the method's tensors), on a "
        "CPU; allocator reuse dominates on small models, so it is no device-memory ranking "
        "(full fine-tuning can read below a frozen-backbone method)"
    ),
    "cpu_rss": "cpu_rss: the whole process's peak resident memory (Python and torch included)",
}


def point_label(table: SuiteTable, e: Entry) -> str:
    """The row's label, with the context fields that tell rows apart (e.g. the results folder).

    Two rows of one configuration from two results folders (or with two weights) both read
    ``lora`` in the table's label column; the figure has no context column, so the varying
    fields' values go into the label: ``lora [my-results]``.
    """
    extra = [_short(table, f, str(e.display.get(f, e.context[f]))) for f in table.varying]
    return e.label + (f" [{', '.join(extra)}]" if extra else "")


def _short(table: SuiteTable, field: str, value: str) -> str:
    """A results folder by its name when the table's folders have distinct names."""
    if field != SOURCE:
        return value
    folders = {str(e.context[SOURCE]) for e in table.entries}
    names = {Path(f).name for f in folders}
    return Path(value).name if len(names) == len(folders) else value


def omitted(table: SuiteTable) -> list[str]:
    """Labels of the rows a figure leaves out: no result on every task (no suite mean)."""
    return [point_label(table, e) for e in table.entries if math.isnan(e.rank)]


def omitted_note(table: SuiteTable) -> str:
    """``not plotted: 2 rows without a result on every task (a, b)``, or ""."""
    left = omitted(table)
    if not left:
        return ""
    names = ", ".join(left[:NAMED]) + (
        f" and {len(left) - NAMED} more" if len(left) > NAMED else ""
    )
    return f"not plotted: {len(left)} row(s) without a result on every task of the suite ({names})"


__all__ = [
    "BAR_LEGEND",
    "MEMORY_NOTES",
    "omitted",
    "omitted_note",
    "point_label",
]
