"""Rows to suite tables: pick the rows a table shows, group them into entries, rank them.

Per suite, in order: count every row's status (both phases) -> keep the final ``ok`` rows ->
drop rows for tasks outside the suite and rows whose ``task_version`` differs from the
registered task spec (stale) -> let a rerun of the same (configuration, task, seed) supersede
the older row (latest ``created_at`` wins) -> group by configuration into
:class:`~pebench.report.aggregate.Entry` rows -> tell same-label configurations apart by a
config hash -> rank. Every row left out is counted in a note.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pebench import results
from pebench.datasets import Suite, TaskSpec
from pebench.report import inference
from pebench.report.aggregate import (
    CONFIG_KEYS,
    CONTEXT,
    SOURCE,
    Entry,
    Row,
    SuiteInfo,
    config_key,
    entry,
    label,
    suite_info,
    suites_and_tasks,
)
from pebench.report.stats import Estimate
from pebench.selection import edge, select_trial, unsettled

#: (row label, {phase: runs}, {status: runs over both phases})
StatusCount = tuple[str, dict[str, int], dict[str, int]]
#: prefix of the short keys that stand for weights tags in a table
WEIGHTS_KEY = "W"


@dataclass
class SuiteTable:
    """Everything rendered for one suite: the ranked entries, run status counts and notes.

    Attributes:
        info: the suite.
        entries: the rows, ranked.
        varying: the context fields shown as columns (they differ between rows).
        status: runs per row label, one item per label.
        failures: the final rows that did not finish ``ok``.
        notes: rows left out, and why.
        fixed: the context fields said once above the table, with their value.
        weights_key: short key -> weights tag, when several (non-random) weights share a table:
            the weights column shows the key, the caption says what it stands for.

    """

    info: SuiteInfo
    entries: list[Entry]
    varying: list[str]
    status: list[StatusCount]
    failures: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    fixed: dict[str, str] = field(default_factory=dict)
    weights_key: dict[str, str] = field(default_factory=dict)
    #: the table's statistics (:class:`pebench.report.stats.TableStats`, over the entries with
    #: a complete suite mean, in table order); ``None`` when there is none
    stats: Any = None

    @property
    def mean_names(self) -> list[str]:
        """Names of the suite-mean columns; the last one ranks the rows."""
        return self.info.mean_names

    def pair(self, a: Entry, b: Entry) -> tuple[Estimate, float]:
        """``(difference M_a − M_b, Holm-adjusted p)`` of two ranked entries."""
        i, j = a.stats.index, b.stats.index
        d, p = self.stats.pairs[(min(i, j), max(i, j))]
        if i > j:
            d = Estimate(-d.value, d.se, d.df, -d.hi, -d.lo, d.test_term)
        return d, p

    @property
    def edge_counts(self) -> tuple[int, int]:
        """``(selections on a grid edge, selections)`` over every (entry, task) shown."""
        picks = [edge for e in self.entries for _, edge in e.selected.values()]
        return sum(bool(edge) for edge in picks), len(picks)


def _row_label(r: dict) -> str:
    return label(r["method"], r["preset"], r["method_reconstruction"], r["weights"])


def status_counts(rows: list[dict], show_source: bool = False) -> list[StatusCount]:
    """Runs per label: per phase and per status (both phases), every row, sorted by label.

    With ``show_source`` (several results folders) each folder's runs count apart, their label
    followed by `` · <folder>``. A method whose rows come from several versions of its code
    (``method_source``) counts each apart, its label followed by `` · code <hash>``.
    """
    codes: dict[str, set[str]] = {}
    for r in rows:
        codes.setdefault(_row_label(r), set()).add(r["method_source"])
    phases: dict[str, dict[str, int]] = {}
    statuses: dict[str, dict[str, int]] = {}
    for r in rows:
        lab = _row_label(r) + (f" · {r[SOURCE]}" if show_source else "")
        if len(codes[_row_label(r)]) > 1:
            lab += f" · code {r['method_source'][:8] or 'unrecorded'}"
        phases.setdefault(lab, dict.fromkeys(results.PHASES, 0))[r["phase"]] += 1
        statuses.setdefault(lab, dict.fromkeys(results.STATUSES, 0))[r["status"]] += 1
    return [(lab, phases[lab], statuses[lab]) for lab in sorted(phases)]


def shown_final_rows(info: SuiteInfo, rows: list[dict], notes: list[str]) -> list[dict]:
    """The final ``ok`` rows a table may show: suite tasks, registered version, a test accuracy.

    Rows for tasks outside the suite and stale rows are counted in ``notes`` (appended).
    """
    final = [r for r in rows if r["phase"] == "final" and r["status"] == "ok"]
    outside = sorted({r["task"] for r in final if r["task"] not in info.tasks})
    if outside:
        notes.append(
            "Final rows for tasks outside the suite definition are not shown: "
            + ", ".join(f"`{t}`" for t in outside)
            + "."
        )
    stale = {
        id(r)
        for r in final
        if r["task"] in info.versions and r["task_version"] != info.versions[r["task"]]
    }
    if stale:
        notes.append(
            f"{len(stale)} final row(s) carry a task version other than the registered one and "
            "are not shown (rerun them)."
        )
    return [
        r
        for r in final
        if r["task"] in info.tasks and id(r) not in stale and not math.isnan(r["test_top1"])
    ]


def latest_runs(final: list[dict], notes: list[str]) -> list[dict]:
    """Keep the newest row per (configuration, task, seed); the superseded are counted in notes."""
    latest: dict[tuple, dict] = {}
    for r in sorted(final, key=lambda r: (r["created_at"], r["run_id"])):
        latest[(*config_key(r), r["task"], r["seed"])] = r
    if len(latest) < len(final):
        notes.append(
            f"{len(final) - len(latest)} final row(s) superseded by a newer run of the same "
            "configuration, task and seed."
        )
    return list(latest.values())


def matching_selection(final: list[dict], rows: list[dict], notes: list[str]) -> list[dict]:
    """Keep the finals that retrain the trial their task's search rows select.

    A final of another trial (the search was rerun and another trial won, or a trial died and
    the finals ran on a partial grid) is stale: left out and counted in ``notes``. Each kept row
    is a copy whose ``selection_edge`` is recomputed from the grid its search rows span (rows
    written before that column, or before the grid grew, show where the selection lies now).
    """
    search: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["phase"] == "search":
            search.setdefault((*config_key(r), r["task"]), []).append(r)
    kept, stale = [], 0
    for r in final:
        trials = search.get((*config_key(r), r["task"]), [])
        best = select_trial(trials)
        if trials and (best is None or unsettled(trials) or best["trial"] != r["trial"]):
            stale += 1
            continue
        r = dict(r)
        if trials:  # the grid its search rows span now (a grid may have grown since)
            lrs, wds = [t["lr"] for t in trials], [t["weight_decay"] for t in trials]
            r["selection_edge"] = edge(r["lr"], r["weight_decay"], lrs, wds)
        kept.append(r)
    if stale:
        notes.append(
            f"{stale} final row(s) do not retrain the trial their task's search rows select "
            "(stale: the search changed or was incomplete) and are not averaged."
        )
    return kept


def build_entries(info: SuiteInfo, final: list[dict]) -> list[Entry]:
    """One :class:`Entry` per configuration, in order of first appearance in ``final``."""
    groups: dict[tuple, list[dict]] = {}
    for r in final:
        groups.setdefault(config_key(r), []).append(r)
    return [entry(key, grp, info) for key, grp in groups.items()]


def context_columns(
    entries: list[Entry], show_source: bool
) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Which context fields a table shows as columns, which once above it, and weights keys.

    A field whose value differs between rows is a column, otherwise it is said once. The
    weights are a column only when several *pretrained* weights share the table (random-init
    rows are marked † in their label already), and then the column shows a short key
    (``W1``...) for each tag, explained above the table. The results folder is said only when
    the report reads several.

    Args:
        entries: the table's rows (their ``display`` values are set here).
        show_source: whether the report reads several results folders.

    Returns:
        ``(varying, fixed, weights_key)`` as in :class:`SuiteTable`.

    """
    if not entries:  # a suite with no finished final run yet
        return [], {}, {}
    values = {c: list(dict.fromkeys(e.context[c] for e in entries)) for c in CONTEXT}
    named = sorted(w for w in values["weights"] if w != "random")
    keys = [f"{WEIGHTS_KEY}{i + 1}" for i in range(len(named))]
    weights_key = dict(zip(keys, named, strict=True)) if len(named) > 1 else {}
    alias = {w: k for k, w in weights_key.items()}
    varying, fixed = [], {}
    for c in CONTEXT:
        if c == "weights" and not weights_key:
            fixed[c] = named[0] if named else "random"
        elif len(values[c]) > 1 or (c == "weights" and weights_key):
            varying.append(c)
        elif c != SOURCE or show_source:
            fixed[c] = values[c][0]
    for e in entries:
        e.display = {**e.context, "weights": alias.get(e.context["weights"], e.context["weights"])}
    return varying, fixed, weights_key


def disambiguate(entries: list[Entry]) -> None:
    """Same label and context but different configs (``--set``) or code: add a short hash of each.

    A config is named by the hash of its JSON (``cfg``), code by its ``method_source``.
    """
    config, source = CONFIG_KEYS.index("method_config"), CONFIG_KEYS.index("method_source")
    groups: dict[tuple, list[Entry]] = {}
    for e in entries:
        groups.setdefault((e.label, *e.context.values()), []).append(e)
    for group in groups.values():
        if len(group) < 2:
            continue
        configs = {e.key[config] for e in group}
        sources = {e.key[source] for e in group}
        for e in group:
            if len(configs) > 1:
                e.label += f" [cfg {hashlib.sha256(e.key[config].encode()).hexdigest()[:8]}]"
            if len(sources) > 1:
                e.label += f" [code {e.key[source][:8] or 'unrecorded'}]"


def _rank_key(e: Entry) -> tuple:
    """Highest rank first, rows without a rank last; ties by label, then key."""
    return (math.isnan(e.rank), -e.rank if not math.isnan(e.rank) else 0.0, e.label, e.key)


def suite_table(info: SuiteInfo, rows: list[dict], show_source: bool = False) -> SuiteTable:
    """Build the table of one suite from all of its rows (both phases, every status).

    Args:
        info: the suite.
        rows: every row recorded for the suite.
        show_source: whether the report reads several results folders (then the folder is
            named above the table or in a column).

    Returns:
        The :class:`SuiteTable`, entries ranked.

    """
    notes: list[str] = []
    if not info.registered:
        notes.append(
            f"Suite `{info.name}` is not registered in this installation: its task list is "
            "inferred from the results, so no suite mean is computed."
        )
    status = status_counts(rows, show_source)
    failures = [r for r in rows if r["phase"] == "final" and r["status"] != "ok"]
    final = latest_runs(shown_final_rows(info, rows, notes), notes)
    final = matching_selection(final, rows, notes)
    entries = build_entries(info, final)
    disambiguate(entries)
    entries.sort(key=_rank_key)
    row_stats, stats = inference.table_stats(entries, info, rows, info.classes)
    for e, s in zip(entries, row_stats, strict=True):
        e.stats = s
    varying, fixed, weights_key = context_columns(entries, show_source)
    return SuiteTable(info, entries, varying, status, failures, notes, fixed, weights_key, stats)


def tables(
    rows: Sequence[Row],
    suites: Mapping[str, Suite] | None,
    tasks: Mapping[str, TaskSpec] | None,
) -> list[SuiteTable]:
    """One :class:`SuiteTable` per suite present in ``rows`` (aliases merged), sorted by name.

    Args:
        rows: the rows as :func:`pebench.report.aggregate.aggregate` returns them (not changed:
            a table keeps copies of the rows it alters).
        suites: see :func:`pebench.report.aggregate.suites_and_tasks`.
        tasks: see :func:`pebench.report.aggregate.suites_and_tasks`.

    Returns:
        The tables (none without rows).

    """
    if not rows:
        return []
    suites, tasks = suites_and_tasks(suites, tasks)
    by_suite: dict[str, list[dict]] = {}
    for r in rows:
        canonical = suites[r["suite"]].name if r["suite"] in suites else r["suite"]
        by_suite.setdefault(canonical, []).append(r)
    several = len({r[SOURCE] for r in rows}) > 1
    return [
        suite_table(suite_info(name, by_suite[name], suites, tasks), by_suite[name], several)
        for name in sorted(by_suite)
    ]
