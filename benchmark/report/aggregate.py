"""Rows to numbers: read the run rows, then summarise one configuration on one suite.

Conventions (protocol.md §8-§9):

* accuracy = last-epoch test top-1 of the ``final`` phase with ``status == "ok"`` (the caller,
  :mod:`pebench.report.tables`, picks those rows);
* per task: the seed values, in percent; the cells show their mean and sample std (n - 1);
* suite means average the per-task seed means and exist only when *every* task of the suite
  has a result (never over fewer tasks);
* ``aggregate == "vtab"`` suites have the plain mean over tasks *and* the mean of group means
  (groups from the task specs, falling back to the rows' ``task_group``); the rank is the mean
  of group means there, the plain mean otherwise;
* a suite whose tasks fall into groups (every ``vtab`` suite; a ``mean`` suite with several
  groups, one of them of several tasks) also shows one mean per group, as soon as every task of
  that group has a result;
* rows of different results folders never enter one summary (``results_dir`` is part of the
  configuration, see :mod:`pebench.report.sources`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pebench import results
from pebench.checks_field import CLAIM_CHECKS, SKIPPED, unverified
from pebench.datasets import Suite, TaskSpec
from pebench.record import RecordError
from pebench.report.sources import ResultsArg, results_dirs
from pebench.store import RunStore

#: one run row: the row schema's fields (:data:`pebench.results.COLUMNS`) plus :data:`SOURCE`
Row = dict[str, Any]
#: the column naming the results folder a row was read from (not a result-row field)
SOURCE = "results_dir"
SORT_KEYS = ("suite", "task", "method", "preset", "phase", "seed", "trial", "run_id", SOURCE)
#: one leaderboard row per distinct value of these columns (plus ``method_config``)
ROW_KEYS = ("method", "preset", "backbone", "weights", "budget", "data_format", SOURCE)
#: one configuration: the :data:`ROW_KEYS`, its method config and the method's code
CONFIG_KEYS = (*ROW_KEYS, "method_config", "method_source")
#: context columns: printed once above a table when constant, as table columns when they vary
CONTEXT = ("backbone", "weights", "budget", "data_format", SOURCE)
RECONSTRUCTION = "(pebench reconstruction)"
UNCHECKED = "(checks skipped)"
#: marks a row of a third-party method plugin (its origin is named in a footnote)
THIRD_PARTY = "‡"
#: a row whose method did not pass the checks its numbers rest on: ``(count, merge unverified)``
UNVERIFIED = "unverified)"


def aggregate(results_dir: ResultsArg, skipped: list[str] | None = None) -> list[Row]:
    """Read and validate every run row under ``<dir>/runs/`` of each results folder.

    Args:
        results_dir: the results folder (holding ``runs/``), or several.
        skipped: when given, bad files are left out and their errors collected here.

    Returns:
        The rows as plain dicts, as the store parsed them (:data:`pebench.results.COLUMNS`)
        plus :data:`SOURCE` (the folder as given), sorted by :data:`SORT_KEYS`.

    Raises:
        ResultsError: a folder without ``runs/`` (a mistyped ``--results`` must not overwrite a
            leaderboard with an empty one; checked for every folder before any is read), or a
            malformed file (names file, line and column).

    """
    stores = [RunStore(d) for d in results_dirs(results_dir)]
    for store in stores:
        if not store.exists():
            raise results.ResultsError(
                f"no results folder {store.runs}: nothing to build a leaderboard from (pass the "
                "folder `pebench run --results` wrote, default: my-results)"
            )
    rows = [{**r, SOURCE: str(s.root)} for s in stores for r in s.rows(skipped)]
    check_lineage(rows)
    return sorted(rows, key=lambda r: tuple(r[k] for k in SORT_KEYS))


def config_key(r: Mapping[str, Any]) -> tuple:
    """The configuration a row belongs to (:data:`CONFIG_KEYS`): one leaderboard row's runs.

    Rows of another ``method_source`` (the method's code changed between them) are another
    configuration: they are never averaged together.
    """
    return tuple(r[k] for k in CONFIG_KEYS)


def check_lineage(rows: Sequence[dict]) -> None:
    """Refuse rows that name the same prepared data (``data_manifest``) but read other arrays.

    A run records the hash of the arrays it read (``data_hash``: its training and evaluation
    splits). Two runs of one task, phase and manifest read the same splits, so their hashes
    agree; a row that disagrees read something else under the same name (a suite plugin that
    rewrote a built-in task, edited data) and must not be averaged with the others.

    Raises:
        ResultsError: naming the task and two runs that disagree.
    """
    seen: dict[tuple, dict] = {}
    for r in rows:
        if not r["data_hash"] or not r["data_manifest"]:
            continue
        key = (r["task"], r["phase"], r["data_manifest"])
        first = seen.setdefault(key, r)
        if first["data_hash"] != r["data_hash"]:
            raise results.ResultsError(
                f"runs {first['run_id']} and {r['run_id']} ({r['phase']}, task {r['task']!r}) name "
                f"the same prepared data (manifest {r['data_manifest']}) but read different arrays "
                f"(data_hash {first['data_hash']} vs {r['data_hash']}): one of them did not read "
                "the task's data; remove or rerun it"
            )


def load_correct(rows: Sequence[dict]) -> dict[tuple[str, str], np.ndarray]:
    """Per-image correctness of every row that has a record, read from the records.

    Keys are ``(results folder, run id)``; values bool arrays in the prepared split's order.

    Raises:
        ResultsError: a record that is malformed or not the one its row names (one line).
    """
    out: dict[tuple[str, str], np.ndarray] = {}
    for r in rows:
        if not r["record_sha256"] or (r[SOURCE], r["run_id"]) in out:
            continue
        try:
            rec = RunStore(r[SOURCE]).load_record(r)
        except RecordError as err:
            raise results.ResultsError(str(err)) from None
        if rec is not None:
            out[(r[SOURCE], r["run_id"])] = np.array(rec.correct, dtype=bool)
    return out


def suites_and_tasks(
    suites: Mapping[str, Suite] | None, tasks: Mapping[str, TaskSpec] | None
) -> tuple[Mapping[str, Suite], Mapping[str, TaskSpec]]:
    """The suites and task specs to use: the global registry unless ``suites`` is given.

    Args:
        suites: suite name (aliases allowed) -> suite, or None for the global registry.
        tasks: task name -> spec; defaults to the global registry when ``suites`` is None, else
            to none.

    Returns:
        ``(suites, tasks)``.

    """
    if suites is None:
        from pebench import datasets

        return datasets.suites(), datasets.tasks() if tasks is None else tasks
    return suites, {} if tasks is None else tasks


def label(method: str, preset: str, reconstruction: bool, weights: str) -> str:
    """The row label: ``method[.preset]``, marked when reconstructed or randomly initialised."""
    out = method if preset == "default" else f"{method}.{preset}"
    if reconstruction:
        out += f" {RECONSTRUCTION}"
    if weights == "random":
        out += " †"
    return out


def third_party(origin: str) -> bool:
    """Whether a row's ``method_origin`` names a third-party plugin.

    Such an origin is a distribution and version (``pebench-ia3==0.1``); pebench's own methods
    say ``builtin``, and its peft bridge names peft's version.
    """
    return origin not in ("", "builtin") and not origin.startswith("peft==")


def _count(value: int | None) -> float:
    return math.nan if value is None else float(value)


def mean(values: Sequence[float]) -> float:
    """Mean of the non-NaN values (NaN when there is none)."""
    vals = [v for v in values if not math.isnan(v)]
    return statistics.fmean(vals) if vals else math.nan


# --------------------------------------------------------------------------- suite info --
@dataclass
class SuiteInfo:
    """What the tables need to know about a suite (registered or inferred from the rows)."""

    name: str
    tasks: tuple[str, ...]
    aggregate: str
    groups: dict[str, str]
    versions: dict[str, str]
    description: str = ""
    registered: bool = True
    #: task -> number of classes (registered tasks only; chance level for the selection flags)
    classes: dict[str, int] = field(default_factory=dict)

    @property
    def mean_names(self) -> list[str]:
        """Names of the suite-mean columns; the last one ranks the rows."""
        if self.aggregate == "vtab":
            return [f"mean of {len(self.tasks)}", "mean of group means"]
        return ["mean"]

    @property
    def group_names(self) -> list[str]:
        """The task groups shown with their own mean, in task order (none for most suites).

        Every group of a ``vtab`` suite; for a ``mean`` suite, its groups when there are several
        and one holds more than one task (a group per task would only repeat the task column).
        An unregistered suite has none: its task list, hence its groups, is only inferred.
        """
        if not self.registered:
            return []
        order = [self.groups.get(t, "") for t in self.tasks]
        groups = list(dict.fromkeys(order))
        if len(groups) < 2:
            return []
        if self.aggregate == "vtab" or any(order.count(g) > 1 for g in groups):
            return groups
        return []

    def group_tasks(self, group: str) -> list[str]:
        """The tasks of ``group``, in suite order."""
        return [t for t in self.tasks if self.groups.get(t, "") == group]


def suite_info(
    name: str, rows: list[dict], suites: Mapping[str, Suite], tasks: Mapping
) -> SuiteInfo:
    """Describe suite ``name`` from the registry, or from its ``rows`` when not registered."""
    row_groups = {r["task"]: r["task_group"] for r in rows}
    if name in suites:
        suite = suites[name]
        specs = {t: tasks[t] for t in suite.tasks if t in tasks}
        return SuiteInfo(
            name=suite.name,
            tasks=tuple(suite.tasks),
            aggregate=suite.aggregate,
            groups={
                t: specs[t].group if t in specs else row_groups.get(t, "") for t in suite.tasks
            },
            versions={t: specs[t].version for t in specs},
            description=suite.description,
            classes={t: specs[t].num_classes for t in specs},
        )
    observed = tuple(sorted(row_groups))
    return SuiteInfo(name, observed, "mean", row_groups, {}, registered=False)


# -------------------------------------------------------------------------------- entry --
@dataclass
class Entry:
    """One leaderboard row: one configuration's final ``ok`` runs on one suite, summarised.

    ``runs`` keeps the rows themselves, so a column can aggregate any result field over them.
    """

    key: tuple
    label: str
    context: dict[str, str]
    random: bool
    params_method: float
    params_varies: bool
    params_head: float
    task_values: dict[str, list[float]]
    means: dict[str, float]
    rank: float
    mem: dict[str, float]
    runs: list[dict]
    #: task -> (selected lr, its edge in the grid: ``""`` inside, else ``lr-low`` ...)
    selected: dict[str, tuple[float, str]] = field(default_factory=dict)
    #: group -> mean over the group's tasks (NaN until every task of the group has a result)
    group_means: dict[str, float] = field(default_factory=dict)
    #: sample std over seeds of the ranking mean (each seed's own suite mean); NaN when fewer
    #: than two seeds ran on every task
    rank_std: float = math.nan
    #: the distribution and version of a third-party plugin (``""``: pebench's own method)
    origin: str = ""
    #: the context values as a table shows them (long weights tags replaced by a short key)
    display: dict[str, str] = field(default_factory=dict)
    #: what the table's statistics say about the row (:class:`pebench.report.inference.RowStats`)
    stats: Any = None


def suite_means(info: SuiteInfo, task_means: Mapping[str, float]) -> dict[str, float]:
    """The suite means (see :attr:`SuiteInfo.mean_names`), NaN unless every task has a mean."""
    complete = info.registered and bool(info.tasks) and all(t in task_means for t in info.tasks)
    if not complete:
        return dict.fromkeys(info.mean_names, math.nan)
    plain = statistics.fmean(task_means[t] for t in info.tasks)
    if info.aggregate != "vtab":
        return {"mean": plain}
    by_group: dict[str, list[float]] = {}
    for t in info.tasks:
        by_group.setdefault(info.groups.get(t, ""), []).append(task_means[t])
    return {
        f"mean of {len(info.tasks)}": plain,
        "mean of group means": statistics.fmean(statistics.fmean(v) for v in by_group.values()),
    }


def ranking_weights(info: SuiteInfo) -> dict[str, float]:
    """Task -> its weight in the ranking mean (``1/K``; ``1/(G·n_g)`` for a mean of group means)."""
    if info.aggregate != "vtab":
        return {t: 1.0 / len(info.tasks) for t in info.tasks}
    groups = [info.groups.get(t, "") for t in info.tasks]
    return {
        t: 1.0 / (len(set(groups)) * groups.count(g))
        for t, g in zip(info.tasks, groups, strict=True)
    }


def group_means(info: SuiteInfo, task_means: Mapping[str, float]) -> dict[str, float]:
    """Mean per shown group (:attr:`SuiteInfo.group_names`), NaN until the group is complete."""
    out = {}
    for g in info.group_names:
        members = info.group_tasks(g)
        done = all(t in task_means for t in members)
        out[g] = statistics.fmean(task_means[t] for t in members) if done else math.nan
    return out


def rank_spread(info: SuiteInfo, seed_values: Mapping[str, Mapping[int, float]]) -> float:
    """Sample std over seeds of the ranking mean, from the seeds every suite task ran with.

    Args:
        info: the suite.
        seed_values: task -> seed -> accuracy (%).

    Returns:
        The std of the per-seed suite means (NaN with fewer than two common seeds, or when the
        suite mean is missing).

    """
    if not info.tasks or any(t not in seed_values for t in info.tasks):
        return math.nan
    common = set.intersection(*(set(seed_values[t]) for t in info.tasks))
    if len(common) < 2:
        return math.nan
    name = info.mean_names[-1]
    per_seed = [
        suite_means(info, {t: seed_values[t][s] for t in info.tasks})[name] for s in sorted(common)
    ]
    return statistics.stdev(per_seed)


def _checks_mark(rows: Sequence[dict]) -> str:
    """`` (checks skipped)``, `` (count, merge unverified)`` or "": what the rows' checks say.

    A row is called conformant only when every run passed the checks its numbers and claims
    rest on (:func:`pebench.checks_field.unverified`).
    """
    if any(r["checks"] == SKIPPED for r in rows):
        return f" {UNCHECKED}"
    missing = {c for r in rows for c in unverified(r["checks"], r["method"], r["method_origin"])}
    ordered = [c for c in CLAIM_CHECKS.values() if c in missing]
    return f" ({', '.join(ordered)} {UNVERIFIED}" if ordered else ""


def peak_memory(rows: Sequence[dict]) -> dict[str, float]:
    """Maximum ``peak_mem_bytes`` per measurement kind (rows without a measurement skipped)."""
    mem: dict[str, float] = {}
    for r in rows:
        if not math.isnan(r["peak_mem_bytes"]):
            kind = r["peak_mem_kind"] or "unknown"
            mem[kind] = max(mem.get(kind, -math.inf), r["peak_mem_bytes"])
    return mem


def entry(key: tuple, rows: list[dict], info: SuiteInfo) -> Entry:
    """Summarise one configuration's final ``ok`` rows on a suite.

    Parameter counts are means over the configuration's own tasks (first over a task's runs),
    so adding *other* rows to a table never changes a row's numbers.

    Args:
        key: the :data:`CONFIG_KEYS` values (:func:`config_key`).
        rows: the configuration's final ``ok`` rows on the suite's tasks (one per task and seed).
        info: the suite.

    Returns:
        The :class:`Entry`.

    """
    context = dict(zip(ROW_KEYS, key, strict=False))
    by_task: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (r["task"], r["seed"], r["run_id"])):
        by_task.setdefault(r["task"], []).append(r)
    task_values = {t: [100.0 * r["test_top1"] for r in rs] for t, rs in by_task.items()}
    seed_values = {t: {r["seed"]: 100.0 * r["test_top1"] for r in rs} for t, rs in by_task.items()}
    task_means = {t: statistics.fmean(v) for t, v in task_values.items()}
    means = suite_means(info, task_means)

    def per_task(field: str) -> float:
        return mean([mean([_count(r[field]) for r in rs]) for rs in by_task.values()])

    params_method = per_task("params_method")
    origins = sorted({r["method_origin"] for r in rows if third_party(r["method_origin"] or "")})
    return Entry(
        key=key,
        label=label(
            context["method"],
            context["preset"],
            any(r["method_reconstruction"] for r in rows),
            context["weights"],
        )
        + _checks_mark(rows)
        + (f" {THIRD_PARTY}" if origins else ""),
        context={c: context[c] for c in CONTEXT},
        origin=", ".join(origins),
        random=context["weights"] == "random",
        params_method=params_method,
        params_varies=len({r["params_method"] for r in rows}) > 1,
        params_head=params_method + per_task("params_head"),
        task_values=task_values,
        means=means,
        rank=means[info.mean_names[-1]],
        mem=peak_memory(rows),
        runs=rows,
        selected={t: (rs[0]["lr"], rs[0]["selection_edge"]) for t, rs in by_task.items()},
        group_means=group_means(info, task_means),
        rank_std=rank_spread(info, seed_values),
    )
