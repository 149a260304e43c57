"""The leaderboard columns, declared once: header, value, aggregation, format and legend.

:data:`COLUMNS` is the single place a measured table's columns are defined; the markdown
renderer builds the header, every cell and the legend from it. Adding a metric column is one
:class:`Column` entry, e.g.::

    Column(
        "GFLOPs/img",
        key="flops_per_image",  # a result-row field, aggregated over the row's runs
        fmt=fixed(2, scale=1e9),
        legend="GFLOPs/img: forward FLOPs per image in 10⁹, mean over runs",
    )

A :class:`ColumnFamily` declares a group of columns that depends on the suite (one per task,
per suite mean, per varying context field). Every formatter maps a missing value to
:data:`MISSING`.
"""

from __future__ import annotations

import math
import operator
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pebench import results
from pebench.report.aggregate import Entry, mean
from pebench.report.inference import FLAGS as FLAG_TEXT
from pebench.report.stats import MIN_SEEDS_FOR_CLAIMS
from pebench.report.tables import SuiteTable

MISSING = "—"
MIB = 1024.0**2

Formatter = Callable[[Any], str]
Aggregation = Callable[[Sequence[float]], float]


#: how a ``peak_mem_kind`` was measured, as an axis label or legend text says it
MEMORY_KINDS = {
    "cuda_allocated": "device peak memory (CUDA max allocated)",
    "cpu_state": "training-state memory above backbone (CPU)",
    "cpu_rss": "process RSS (CPU, includes Python)",
}
#: decimals of a params column: at least this many, at most :data:`PARAMS_MAX_DECIMALS`
PARAMS_MIN_DECIMALS = 2
PARAMS_MAX_DECIMALS = 6


def memory_kind(kind: str) -> str:
    """What a ``peak_mem_kind`` measured, in words (the kind itself when unknown)."""
    return MEMORY_KINDS.get(kind, f"peak memory ({kind or 'unknown'})")


# --------------------------------------------------------------------------- formatters --
def params_decimals(counts: Sequence[float]) -> int:
    """Decimals (of millions) that give the smallest non-zero count two significant digits.

    One table prints all its parameter counts with these decimals, so the column reads at one
    precision: between :data:`PARAMS_MIN_DECIMALS` and :data:`PARAMS_MAX_DECIMALS`.
    """
    nonzero = [abs(c) / 1e6 for c in counts if not math.isnan(c) and c != 0]
    if not nonzero:
        return PARAMS_MIN_DECIMALS
    exponent = math.floor(math.log10(min(nonzero)))
    return min(PARAMS_MAX_DECIMALS, max(PARAMS_MIN_DECIMALS, 1 - exponent))


def fmt_params(count: float, decimals: int = PARAMS_MIN_DECIMALS) -> str:
    """Parameters in M with ``decimals`` decimals; an exact 0 is ``0``."""
    if math.isnan(count):
        return MISSING
    if count == 0:
        return "0"
    return f"{count / 1e6:.{decimals}f}"


def params_formatter(decimals: int) -> Formatter:
    """A formatter of ``(count, varies)``: :func:`fmt_params`, `` ‡`` when it varies by task."""

    def fmt(value: tuple[float, bool]) -> str:
        count, varies = value
        return fmt_params(count, decimals) + (" ‡" if varies else "")

    return fmt


def fmt_acc(values: list[float] | None) -> str:
    """Seed values -> ``mean ± sample std`` (one decimal), the plain mean for a single seed."""
    if not values:
        return MISSING
    avg = statistics.fmean(values)
    if len(values) == 1:
        return f"{avg:.1f}"
    return f"{avg:.1f} ± {statistics.stdev(values):.1f}"


def fmt_num(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals."""
    return MISSING if math.isnan(value) else f"{value:.{digits}f}"


def fixed(digits: int, scale: float = 1.0) -> Formatter:
    """A formatter: ``value / scale`` with ``digits`` decimals (:func:`fmt_num`)."""

    def fmt(value: float) -> str:
        return fmt_num(value / scale, digits)

    return fmt


def fmt_mem(mem: dict[str, float]) -> str:
    """Peak memory per measurement kind, in MiB, kinds sorted by name."""
    if not mem:
        return MISSING
    return "; ".join(f"{mem[k] / MIB:.1f} ({k})" for k in sorted(mem))


def fmt_range(counts: list[int]) -> str:
    """Sorted distinct counts -> ``n`` when all equal, else ``min–max``."""
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def maximum(values: Sequence[float]) -> float:
    """Maximum of the non-NaN values (NaN when there is none); an :data:`Aggregation`."""
    vals = [v for v in values if not math.isnan(v)]
    return max(vals) if vals else math.nan


# ------------------------------------------------------------------------------ columns --
@dataclass(frozen=True)
class Column:
    """One column of a measured table.

    Attributes:
        header: the header text.
        fmt: the raw value -> cell text.
        key: a result-row field (:data:`pebench.results.COLUMNS`); the raw value is ``agg``
            over the entry's runs. Give exactly one of ``key`` and ``value``.
        value: the raw value as a function of the aggregated row (:class:`Entry`).
        agg: how the runs' ``key`` values combine (NaN-skipping mean by default).
        legend: the legend text (Markdown, no final period); None when another column's text
            covers this one.
        legend_group: columns with the same group share one legend bullet: their texts joined
            with ``"; "``, where the group's first column would put its bullet. None: a bullet
            of its own.
        legend_first: the bullet goes before those of the columns without it (the accuracy
            cells are explained before the cost columns).

    """

    header: str
    fmt: Formatter = str
    key: str | None = None
    value: Callable[[Entry], Any] | None = None
    agg: Aggregation = mean
    legend: str | None = None
    legend_group: str | None = None
    legend_first: bool = False

    def __post_init__(self) -> None:
        if (self.key is None) == (self.value is None):
            raise ValueError(f"column {self.header!r}: give exactly one of key and value")
        if self.key is not None and self.key not in results.COLUMNS:
            raise ValueError(f"column {self.header!r}: {self.key!r} is not a result-row field")

    def expand(self, table: SuiteTable) -> list[Column]:
        """The concrete columns for ``table``: just this one."""
        del table
        return [self]

    def raw(self, entry: Entry) -> Any:
        """The unformatted value for ``entry``."""
        if self.value is not None:
            return self.value(entry)
        return self.agg([r[self.key] for r in entry.runs])

    def cell(self, entry: Entry) -> str:
        """The cell text for ``entry``."""
        return self.fmt(self.raw(entry))


@dataclass(frozen=True)
class ColumnFamily:
    """Columns that depend on the suite: one per member (a task, a suite mean, a field).

    Attributes:
        members: the members of a table, in column order.
        header: a member -> its header text.
        value: ``(entry, member)`` -> the raw value.
        fmt: the raw value -> cell text.
        legend: see :class:`Column`.
        legend_group: see :class:`Column`.
        legend_first: see :class:`Column`.

    """

    members: Callable[[SuiteTable], Sequence[str]]
    header: Callable[[str], str]
    value: Callable[[Entry, str], Any]
    fmt: Formatter = str
    legend: str | None = None
    legend_group: str | None = None
    legend_first: bool = False

    def expand(self, table: SuiteTable) -> list[Column]:
        """One :class:`Column` per member of ``table``."""
        return [
            Column(self.header(m), self.fmt, value=lambda e, m=m: self.value(e, m))
            for m in self.members(table)
        ]


@dataclass(frozen=True)
class TableColumn:
    """One column whose formatter depends on the whole table (e.g. one precision per column).

    Attributes:
        header: the header text.
        value: the aggregated row -> the raw value.
        formatter: the table -> the formatter of its cells.
        legend: see :class:`Column`.
        legend_group: see :class:`Column`.
        legend_first: see :class:`Column`.

    """

    header: str
    value: Callable[[Entry], Any]
    formatter: Callable[[SuiteTable], Formatter]
    legend: str | None = None
    legend_group: str | None = None
    legend_first: bool = False

    def expand(self, table: SuiteTable) -> list[Column]:
        """The concrete column for ``table``."""
        return [Column(self.header, self.formatter(table), value=self.value)]


Spec = Column | ColumnFamily | TableColumn


def short_task(task: str) -> str:
    """A task without its suite: ``demo/shapes`` -> ``shapes``."""
    return task.split("/", 1)[1] if "/" in task else task


def _params_excl(e: Entry) -> tuple[float, bool]:
    return e.params_method, e.params_varies


def _params_incl(e: Entry) -> tuple[float, bool]:
    return e.params_head, e.params_varies


def table_params_decimals(table: SuiteTable) -> int:
    """:func:`params_decimals` over both params columns of ``table``."""
    return params_decimals([c for e in table.entries for c in (e.params_method, e.params_head)])


def _params_fmt(table: SuiteTable) -> Formatter:
    return params_formatter(table_params_decimals(table))


def group_header(group: str) -> str:
    """The header of a group-mean column: ``natural`` -> ``Natural``."""
    return (group or "other")[:1].upper() + (group or "other")[1:]


def fmt_selected(selected: dict[str, tuple[float, str]]) -> str:
    """Selected learning rates over tasks (``3e-03``, ``1e-03–1e-02``), ``⚑n`` for n edges."""
    if not selected:
        return MISSING
    lrs = sorted({lr for lr, _ in selected.values()})
    text = f"{lrs[0]:.0e}" if len(lrs) == 1 else f"{lrs[0]:.0e}–{lrs[-1]:.0e}"
    edges = sum(bool(edge) for _, edge in selected.values())
    return text + (f" ⚑{edges}" if edges else "")


def _interval(e: Entry) -> tuple[float, float]:
    return (e.stats.interval.lo, e.stats.interval.hi) if e.stats else (math.nan, math.nan)


def fmt_interval(bounds: tuple[float, float]) -> str:
    """A 95 % interval as ``[lo, hi]`` (two decimals)."""
    lo, hi = bounds
    return MISSING if math.isnan(lo) else f"[{lo:.2f}, {hi:.2f}]"


def _claim(e: Entry, text: str) -> str:
    """``text``, in parentheses with ``°`` when the row has too few seeds for claims."""
    return text if e.stats.claims else f"({text})°"


def _ub_rank(e: Entry) -> str:
    if e.stats is None or not e.stats.ub_rank:
        return MISSING
    return _claim(e, str(e.stats.ub_rank))


def _rank_interval(e: Entry) -> str:
    if e.stats is None or not e.stats.rank_lo:
        return MISSING
    lo, hi = e.stats.rank_lo, e.stats.rank_hi
    return str(lo) if lo == hi else f"{lo}–{hi}"


def _tier(e: Entry) -> str:
    if e.stats is None or not e.stats.tier:
        return MISSING
    return _claim(e, str(e.stats.tier))


def _flags(e: Entry) -> str:
    """Flag kinds with their tasks (``collapse: count; close: shapes, texture``); edges aside."""
    if e.stats is None:
        return ""
    parts = [
        f"{kind}: {', '.join(short_task(t) for t in tasks)}"
        for kind, tasks in e.stats.flags.items()
        if kind != "edge"
    ]
    return "; ".join(parts)


def _seed_counts(e: Entry) -> list[int]:
    return sorted({len(v) for v in e.task_values.values()})


# ------------------------------------------------------------------------ the columns --
METHOD = Column("method", value=operator.attrgetter("label"))
CONTEXT_COLUMNS = ColumnFamily(
    members=operator.attrgetter("varying"),
    header=lambda field: field.replace("_", " "),
    value=lambda e, field: e.display.get(field, e.context[field]),
)
PARAMS_EXCL = TableColumn(
    "params (M) excl. head",
    value=_params_excl,
    formatter=_params_fmt,
    legend="**params (M) excl. head**: trainable parameters the method adds or unfreezes, "
    "in millions (one precision per table), classification head excluded",
    legend_group="params",
)
PARAMS_INCL = TableColumn(
    "params (M) incl. head",
    value=_params_incl,
    formatter=_params_fmt,
    legend="**incl. head** adds the row's mean head size over its tasks",
    legend_group="params",
)
TASKS = ColumnFamily(
    members=lambda table: table.info.tasks,
    header=short_task,
    value=lambda e, task: e.task_values.get(task),
    fmt=fmt_acc,
    legend="Task cells are mean ± sample std (n − 1) over seeds, a single number when there "
    f"is one seed, and {MISSING} when no final run finished `ok`",
    legend_first=True,
)
GROUPS = ColumnFamily(
    members=lambda table: table.info.group_names,
    header=group_header,
    value=lambda e, group: e.group_means[group],
    fmt=fixed(2),
    legend="Group columns (e.g. Natural, Specialized, Structured): mean over the group's "
    "tasks, shown as soon as every task of **that group** has a result",
    legend_first=True,
)
MEANS = ColumnFamily(
    members=operator.attrgetter("mean_names"),
    header=str,
    value=lambda e, name: e.means[name],
    fmt=fixed(2),
    legend="Suite means average the per-task seed means and are shown only when **every** "
    f"task of the suite has a result ({MISSING} otherwise; never a mean over fewer tasks). "
    "VTAB-style suites report both the plain mean over tasks and the mean of group means",
    legend_first=True,
)
INTERVAL = Column(
    "95% CI",
    fmt_interval,
    value=_interval,
    legend="**95% CI**: interval of the ranking suite mean: t with Welch–Satterthwaite degrees "
    "of freedom over the seed variance (per task, over its seeds) and the test-set variance "
    "(per image, from the run records; binomial when a row has counts only); it covers "
    "93–97 % in simulation at 3–10 seeds",
    legend_first=True,
)
UB_RANK = Column(
    "rank (UB)",
    value=_ub_rank,
    legend="**rank (UB)**: 1 + the number of rows significantly better (two-sided t test on "
    "the paired difference of suite means, Holm-corrected over all pairs of the table, "
    "α = 0.05): it cannot over-claim; **rank 95% CI**: 2.5–97.5 % of the row's rank over "
    "joint draws of every row's seed and test-set error; **tier**: the best remaining row "
    "and every row not significantly worse than it form a tier, repeated (greedy: rows of one "
    "tier may still differ); (n)°: fewer than "
    f"{MIN_SEEDS_FOR_CLAIMS} seeds on a task, so the rank and tier describe the data and "
    "make no significance claim",
    legend_first=True,
)
RANK_INTERVAL = Column("rank 95% CI", value=_rank_interval)
TIER = Column("tier", value=_tier)
FLAGS = Column(
    "flags",
    value=_flags,
    legend="**flags** (tasks where a number is fragile): collapse: "
    + FLAG_TEXT["collapse"]
    + "; close: "
    + FLAG_TEXT["close"]
    + "; cliff: "
    + FLAG_TEXT["cliff"],
)
SELECTED_LR = Column(
    "selected lr",
    fmt_selected,
    value=operator.attrgetter("selected"),
    legend="selected lr: the learning rates the validation search selected over the "
    "suite's tasks (range); ⚑n: n of them on an edge of the search grid, where the optimum "
    "may lie beyond it",
)
PEAK_MEM = Column(
    "peak mem (MiB)",
    fmt_mem,
    value=operator.attrgetter("mem"),
    legend="peak mem: maximum over runs, with how it was measured ("
    + ", ".join(f"`{k}`: {v}" for k, v in MEMORY_KINDS.items())
    + ")",
    legend_group="runs",
)
TRAIN_SPEED = Column(
    "train img/s",
    fixed(1),
    key="train_images_per_s",
    legend="img/s: mean over runs",
    legend_group="runs",
)
EVAL_SPEED = Column("eval img/s", fixed(1), key="eval_images_per_s")
SEEDS = Column(
    "seeds",
    fmt_range,
    value=_seed_counts,
    legend="seeds: seeds per task",
    legend_group="runs",
)

#: the measured tables' columns, left to right (the first must be the row label)
COLUMNS: tuple[Spec, ...] = (
    METHOD,
    CONTEXT_COLUMNS,
    PARAMS_EXCL,
    PARAMS_INCL,
    TASKS,
    GROUPS,
    MEANS,
    INTERVAL,
    UB_RANK,
    RANK_INTERVAL,
    TIER,
    FLAGS,
    SELECTED_LR,
    PEAK_MEM,
    TRAIN_SPEED,
    EVAL_SPEED,
    SEEDS,
)
#: the columns of a paper table (``pebench export``): accuracy and size, no run statistics
PAPER_COLUMNS: tuple[Spec, ...] = (
    METHOD,
    CONTEXT_COLUMNS,
    PARAMS_EXCL,
    TASKS,
    GROUPS,
    MEANS,
    INTERVAL,
    UB_RANK,
    TIER,
)


def expand(columns: Sequence[Spec], table: SuiteTable) -> list[Column]:
    """The concrete columns of ``table``, left to right."""
    return [col for spec in columns for col in spec.expand(table)]


def legend(columns: Sequence[Spec]) -> list[str]:
    """The legend bullets of ``columns`` (no final period): ``legend_first`` ones first.

    Within each of the two parts the bullets follow the column order; the texts of a
    ``legend_group`` are joined into the bullet of the group's first column.
    """
    bullets: list[list[str]] = []
    group_at: dict[str, int] = {}
    for first in (True, False):
        for spec in columns:
            if spec.legend is None or spec.legend_first is not first:
                continue
            group = spec.legend_group
            if group is not None and group in group_at:
                bullets[group_at[group]].append(spec.legend)
                continue
            if group is not None:
                group_at[group] = len(bullets)
            bullets.append([spec.legend])
    return ["; ".join(texts) for texts in bullets]
