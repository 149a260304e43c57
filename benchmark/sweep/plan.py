"""Planning: a ``pebench run`` selection → validated :class:`Sweep` s whose runs have fixed ids.

Every input is resolved and checked here, before anything runs or is written: method name,
preset and ``--set`` values, tasks, budget (and that it fits the tasks' modality), backbone,
weights file and data lineage. The weights of each (backbone, weights) pair are hashed and loaded
once per planning, however many methods the sweep has; runs are handed the tag and never hash the
file again.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pebench
from pebench import results as R
from pebench.budget import Budget, get_budget
from pebench.checks_field import SKIPPED, passed_value
from pebench.config import unknown_key, unknown_preset
from pebench.datasets import TaskSpec, check_data, describe_data, get_suite, resolve_tasks
from pebench.datasets.cache_errors import CacheMissingError
from pebench.method_catalog import catalog_config
from pebench.method_source import method_source
from pebench.methods import PEFT_PREFIX, build_method, builtin_catalog, registry, split_spec
from pebench.registry import RegistryError, suggest
from pebench.run import RunOptions, RunSpec
from pebench.selection import select_trial, selection_fields, unsettled
from pebench.store import RunStore
from pebench.sweep.gate import RUN_CHECKS, ConformanceError, check_method, largest_eval_batch


@dataclass
class Sweep:
    """The runs of one method of a ``pebench run`` invocation, with its resolved inputs.

    Attributes:
        method: registered method name.
        preset: the method preset.
        overrides: ``--set`` overrides of the method config.
        budget: the budget every run trains under.
        tasks: the tasks, in order.
        seeds: final-run seeds.
        backbone: timm name.
        weights: weights as given (path, ``random`` or ``None``).
        results_dir: where rows are written (:attr:`store`).
        options: how runs execute (not part of any run's identity).
        static: metadata of every row computed once per sweep (method config and origin, the
            weights tag) by :func:`plan_sweeps`.
        data: task name -> (data format, manifest hash), read once, before any run.
        unprepared: task name -> why its data cannot be described (a cache never prepared:
            the loader's message, naming the command that prepares it); only
            ``plan_sweeps(..., unprepared_ok=True)`` (``pebench status``) leaves tasks here,
            and such a task's runs cannot be named.
    """

    method: str
    preset: str
    overrides: dict[str, Any]
    budget: Budget
    tasks: list[TaskSpec]
    seeds: tuple[int, ...]
    backbone: str
    weights: str | None
    results_dir: Path
    options: RunOptions = RunOptions()
    static: dict[str, Any] = field(default_factory=dict)
    data: dict[str, tuple[str, str]] = field(default_factory=dict)
    unprepared: dict[str, str] = field(default_factory=dict)

    @property
    def timeout(self) -> float:
        """Seconds one run may take (the options' timeout, or the budget's)."""
        return self.options.timeout_s or self.budget.timeout_s

    def base_row(
        self, task: TaskSpec, phase: str, trial: int, lr: float, wd: float, seed: int
    ) -> dict[str, Any]:
        """Identity and static metadata of one run (what a failure row still records)."""
        row: dict[str, Any] = {
            k: math.nan for k, kind in R.SCHEMA.items() if kind in ("float", "frac")
        }
        row.update(
            phase=phase,
            trial=trial,
            lr=lr,
            weight_decay=wd,
            method=self.method,
            preset=self.preset,
            **self.static,
            backbone=self.backbone,
            task=task.name,
            suite=task.suite,
            task_group=task.group,
            task_version=task.version,
            data_format=self.data[task.name][0],
            data_hash="",
            data_manifest=self.data[task.name][1],
            budget=self.budget.id,
            seed=seed,
            pebench_version=pebench.__version__,
            peak_mem_kind="",
            created_at="",
            git_sha="",
            git_dirty=False,
            python_version="",
            torch_version="",
            timm_version="",
            device="",
            executor="local",
            job_id="",
            log_path="",
            status="failed",
            error="",
        )
        if self.budget.selection != "max":  # rows of a "max" budget stay as they were written
            row["selection_rule"] = self.budget.selection
        row["run_id"] = R.run_id(row)
        return row

    def spec(self, row: dict[str, Any]) -> RunSpec:
        """The run of ``row`` as a process executes it (its budget and task spec carried)."""
        overrides = tuple(sorted(self.overrides.items()))
        task = next(t for t in self.tasks if t.name == row["task"])
        return RunSpec(
            row, self.budget, task, overrides=overrides, weights=self.weights, options=self.options
        )

    def search_specs(self, task: TaskSpec) -> list[RunSpec]:
        """The search runs of ``task`` (train → val): every trial's replicates, in grid order."""
        return [
            self.spec(
                self.base_row(task, "search", i, lr, wd, seed)
                | ({"replicate": r} if self.budget.search_replicates > 1 else {})
            )
            for i, (lr, wd) in enumerate(self.budget.trials())
            for r, seed in enumerate(self.budget.search_seeds())
        ]

    def after_search(
        self, task: TaskSpec, search_rows: list[dict[str, Any]]
    ) -> tuple[str, list[RunSpec]]:
        """What follows ``task``'s recorded search: the one rule for dispatch and status.

        Returns:
            ``("blocked", placeholders)`` when a trial has no final outcome (the finals never
            run on a partial grid), ``("failed", placeholders)`` when no trial finished ``ok``,
            else ``("finals", the finals of the selected trial)``.
        """
        if unsettled(search_rows):
            return "blocked", self.placeholders(task)
        finals = self.final_specs(task, search_rows)
        return ("failed" if finals[0].trial == -1 else "finals"), finals

    def final_specs(self, task: TaskSpec, search_rows: list[dict[str, Any]]) -> list[RunSpec]:
        """The final runs of ``task`` (trainval → test, one per seed) given its search rows.

        Each final row records its selection: the trial's validation score, the grid it was
        chosen from and whether it lies on an edge of that grid (:mod:`pebench.selection`).
        Without a search trial ``ok`` the finals are placeholders (``trial`` -1, NaN lr/wd):
        see :meth:`placeholders`.
        """
        best = select_trial(search_rows)
        if best is None:
            return self.placeholders(task)
        lr, wd = best["lr"], best["weight_decay"]
        chosen = selection_fields(best, self.budget.lr_grid, self.budget.wd_grid)
        return [
            self.spec(self.base_row(task, "final", best["trial"], lr, wd, seed) | chosen)
            for seed in self.seeds
        ]

    def placeholders(self, task: TaskSpec) -> list[RunSpec]:
        """Finals that cannot be named (no trial selected): ``trial`` -1, NaN lr and wd."""
        return [
            self.spec(self.base_row(task, "final", -1, math.nan, math.nan, seed))
            for seed in self.seeds
        ]

    @property
    def store(self) -> RunStore:
        """The results folder this sweep's rows go to."""
        return RunStore(self.results_dir)

    def grid_ids(self, task: TaskSpec) -> list[str]:
        """Run ids of ``task``'s whole grid: trials, the finals of every trial, placeholders."""
        ids = [s.run_id for s in self.search_specs(task) + self.placeholders(task)]
        return ids + self.final_ids(task)

    def final_ids(self, task: TaskSpec, but: int | None = None) -> list[str]:
        """Run ids of the finals of every trial of ``task`` (except trial ``but``)."""
        return [
            self.base_row(task, "final", i, lr, wd, seed)["run_id"]
            for i, (lr, wd) in enumerate(self.budget.trials())
            if i != but
            for seed in self.seeds
        ]


@dataclass(frozen=True)
class Selection:
    """What a ``pebench run`` selects besides its methods (the shared inputs of its sweeps)."""

    tasks: str | None = None
    budget: str | None = None
    seeds: Sequence[int] | None = None
    backbone: str | None = None
    weights: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    results_dir: str | Path = "results"


DEFAULT_SELECTION = Selection()
DEFAULT_OPTIONS = RunOptions()


def _check_names(
    methods: Sequence[str], preset: str | None, overrides: dict[str, Any]
) -> list[tuple[str, str | None]]:
    """``(name, preset)`` of each method spec, checked without importing any method.

    Unknown names fail from the registry's name table; a built-in method's unknown preset or
    ``--set`` key from the method catalog (third-party and peft methods are checked when built).
    """
    known = registry.names()
    catalog = {entry["name"]: entry for entry in builtin_catalog()}
    named = [split_spec(m) for m in methods]
    for name, spec_preset in named:
        if name not in known and not name.startswith(PEFT_PREFIX):
            raise RegistryError(suggest(name, known, "method"))
        if (entry := catalog.get(name)) is None or registry.origin_of(name) != "builtin":
            continue
        if (chosen := preset or spec_preset or "default") not in entry["presets"]:
            raise unknown_preset(chosen, name, entry["presets"])
        if bad := [k for k in overrides if k not in entry["config"]]:
            raise unknown_key(bad[0], entry["config"])
    return named


def _resolve_weights(backbone: str, weights: str | None, image_size: int, load: bool) -> str:
    """The weights tag (the file hashed once); the backbone is loaded once to fail fast.

    Neither torch nor timm is imported for pebench's own backbones with random or embedded
    weights (the demo): the name is known, and an embedded checkpoint whose SHA-256 matches the
    one pebench ships loads by construction. A timm name is checked by timm, and a weights file
    is loaded, so that a wrong one is one line before anything runs.
    """
    from pebench.backbone_names import RANDOM, is_own, weights_tag

    if not is_own(backbone):
        from pebench.backbones import known_backbone

        known_backbone(backbone)
    tag = weights_tag(backbone, weights)  # a missing file fails here, naming the path
    if load and weights != RANDOM and not tag.startswith("embedded:"):
        from pebench.backbones import create_backbone

        create_backbone(backbone, weights, image_size=image_size, tag=tag)
    return tag


def _method_facts(name: str, preset: str, overrides: dict[str, Any]) -> tuple[str, bool]:
    """``(config_json, reconstruction)`` of a method preset; its preset, keys and values checked.

    A built-in preset without overrides is read from the method catalog (no import: planning
    runs that are all recorded needs no torch; :func:`pebench.method_catalog.catalog_config`), any
    other is built.
    """
    if not overrides and (known := catalog_config(name, preset)) is not None:
        return known
    method = build_method(name, overrides, preset=preset)
    return method.config_json(), bool(registry.get(name).reconstruction)


def _describe(
    specs: list[TaskSpec], data_dir: str | None, image_size: int, unprepared_ok: bool
) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """``(data lineage by task, why by unprepared task)``; see :func:`plan_sweeps`.

    Raises:
        pebench.datasets.cache_errors.CacheMissingError: a cache never prepared, unless
            ``unprepared_ok``.
    """
    data: dict[str, tuple[str, str]] = {}
    unprepared: dict[str, str] = {}
    for spec in specs:
        try:
            data[spec.name] = describe_data(spec, data_dir, image_size)
        except CacheMissingError as err:
            if not unprepared_ok:
                raise
            unprepared[spec.name] = str(err)
    return data, unprepared


def _checks_value(checks: bool) -> str:
    """What the rows of a sweep say about the gate: the checks passed, or ``skipped``."""
    return passed_value(RUN_CHECKS) if checks else SKIPPED


def _static(name: str, facts: tuple[str, bool], tag: str, checks: str) -> dict[str, Any]:
    """Row metadata shared by every run of one method's sweep (``facts``: :func:`_method_facts`)."""
    return {
        "method_config": facts[0],
        "method_origin": registry.origin_of(name),
        "method_source": method_source(name),
        "method_reconstruction": facts[1],
        "checks": checks,
        "weights": tag,
    }


def plan_sweeps(
    methods: Sequence[str],
    selection: Selection = DEFAULT_SELECTION,
    options: RunOptions = DEFAULT_OPTIONS,
    load_weights: bool = True,
    checks: bool = True,
    unprepared_ok: bool = False,
) -> list[Sweep]:
    """One validated sweep per method; every input is checked before anything runs or is written.

    Cheap checks come first (method, task, suite and budget names need no model), then the
    method configs, the backbone and weights. The task list, budget and weights are resolved
    once for all methods: the weights file is hashed once and the backbone loaded once
    (``load_weights=False`` skips the load, for ``pebench status``, which needs only run ids).
    With ``checks``, each method must pass :data:`RUN_CHECKS` (:func:`check_method`, in a fresh
    process, on the sweep's config and evaluation batch sizes) before a third-party method is
    imported here; without, its rows say ``checks=skipped``. A relative ``data_dir`` is made
    absolute, since workers may start elsewhere. ``unprepared_ok`` (``pebench status`` only,
    never a run): a task whose cache was never prepared is named in each sweep's ``unprepared``
    instead of failing the plan.

    Raises:
        pebench.errors.PebenchError: unknown method, preset, ``--set`` key or value, task, suite,
            budget or backbone; a budget of another modality; a missing or unreadable weights
            file; a data cache never prepared.
    """
    s = selection
    named = _check_names(methods, s.preset, s.overrides)
    task_specs = resolve_tasks(s.tasks or "demo")
    budget = get_budget(s.budget or get_suite(task_specs[0].suite).default_budget)
    for spec in task_specs:
        budget.check_task(spec)  # an image budget for a video task (or the reverse) is refused
    presets = [s.preset or preset or "default" for _, preset in named]
    facts: dict[tuple[str, str], tuple[str, bool]] = {}
    for (name, _), preset in zip(named, presets, strict=True):
        if name.startswith(PEFT_PREFIX) or registry.origin_of(name) == "builtin":
            # built-in code: checked here; a plugin is imported only after its checks
            facts[name, preset] = _method_facts(name, preset, s.overrides)
    backbone = s.backbone or budget.backbone
    weights = budget.weights_for(s.backbone, s.weights)  # smoke budgets: random init
    tag = _resolve_weights(backbone, weights, budget.image_size, load_weights)
    if options.data_dir:
        options = replace(options, data_dir=os.path.abspath(options.data_dir))
    # the data lineage of every task (format and manifest hash), read once, before any run:
    # a cache that was never prepared fails here, with the command that prepares it (status
    # only notes it: that task's runs cannot be named)
    data, unprepared = _describe(task_specs, options.data_dir, budget.image_size, unprepared_ok)
    prepared = [t for t in task_specs if t.name in data]
    check_data(prepared, options.data_dir, budget.image_size)  # every split a run reads
    # last: bad input fails before anything is written. The checks run in their own process on
    # each (method, preset) as its sweep runs it; a plugin is imported here only once they pass
    # (its import-time code cannot patch the gate)
    eval_batch = largest_eval_batch(budget, options.device) if checks else 0
    gated = [(name, preset) for (name, _), preset in zip(named, presets, strict=True)]
    for name, preset in dict.fromkeys(gated) if checks else ():
        check_method(
            name, Path(s.results_dir), preset, s.overrides, eval_batch, options.env, options.threads
        )
    for (name, _), preset in zip(named, presets, strict=True):
        if (name, preset) not in facts:  # third-party presets, keys and values
            facts[name, preset] = _method_facts(name, preset, s.overrides)
    seeds = tuple(s.seeds) if s.seeds else budget.seeds
    return [
        Sweep(
            method=name,
            preset=preset,
            overrides=dict(s.overrides),
            budget=budget,
            tasks=task_specs,
            seeds=seeds,
            backbone=backbone,
            weights=weights,
            results_dir=Path(s.results_dir),
            options=options,
            static=_static(name, facts[name, preset], tag, _checks_value(checks)),
            data=data,
            unprepared=unprepared,
        )  # fmt: skip
        for (name, _), preset in zip(named, presets, strict=True)
    ]


def plan_sweep(
    method: str,
    options: RunOptions = DEFAULT_OPTIONS,
    load_weights: bool = True,
    checks: bool = True,
    **selection: Any,
) -> Sweep:
    """The sweep of one ``method`` (:func:`plan_sweeps`); ``selection``: :class:`Selection` keys."""
    return plan_sweeps([method], Selection(**selection), options, load_weights, checks)[0]


def config_summary(sweep: Sweep) -> str:
    """One JSON line describing a sweep (printed before running)."""
    return json.dumps(
        {
            "method": sweep.method,
            "preset": sweep.preset,
            "overrides": sweep.overrides,
            "tasks": [t.name for t in sweep.tasks],
            "budget": sweep.budget.id,
            "seeds": list(sweep.seeds),
            "backbone": sweep.backbone,
            "weights": sweep.static["weights"],
            "results": str(sweep.results_dir),
            "cpus": os.cpu_count(),
        }
    )


__all__ = [
    "RUN_CHECKS",
    "ConformanceError",
    "check_method",
    "Selection",
    "Sweep",
    "config_summary",
    "plan_sweep",
    "plan_sweeps",
]
