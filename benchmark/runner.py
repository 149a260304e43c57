"""Runs: one (method, config, backbone+weights, task, budget, seed, phase) -> one result row.

Each run executes in its own process (a ``forkserver`` child that has pebench preloaded), writes
its own row file atomically, and exits. A crash, OOM kill or timeout of the child is recorded by
its worker as a row with that status, and the sweep goes on. Rerunning the same command skips
runs whose row already exists with a final status (resume by ``run_id``).

A sweep expands into :class:`RunSpec` s that :func:`dispatch` hands to an executor
(:mod:`pebench.executors`: local processes, Slurm through submitit, or Ray). Per (method, task):
all search trials (train → val), then the selected trial's final runs (trainval → test) for every
seed, submitted once that task's search rows are recorded. Test data are loaded only by finals.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pebench
from pebench import results as R
from pebench.backbones import RANDOM, create_backbone, known_backbone, weights_tag
from pebench.budget import Budget, get_budget
from pebench.data import check_fits
from pebench.datasets import TaskSpec, describe_data, get_task, resolve_tasks
from pebench.methods import build_method, registry, split_spec
from pebench.worker import (
    RunSpec,
    classify,
    marker_is_live,
    marker_path,
    read_marker,
    record_lost,
    run_one,
)


def _device(name: str):  # noqa: ANN202
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ------------------------------------------------------------------------------------ child --
def execute(spec: RunSpec) -> dict[str, Any]:
    """Run one training + evaluation in this process and return its complete row."""
    import torch

    from pebench.data import run_splits
    from pebench.method import prepare
    from pebench.metrics import (
        checkpoint_bytes,
        flops_per_image,
        peak_memory,
        provenance,
        reset_peak_memory,
    )
    from pebench.train import evaluate, train

    device = _device(spec.device)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    reset_peak_memory(device)
    budget = get_budget(spec.budget)
    task = get_task(spec.task)
    row = dict(spec.base_row)
    row.update(provenance(device))
    t_start = time.perf_counter()

    torch.manual_seed(0)  # the same backbone for every method and seed (matters for random init)
    frames = {"num_frames": budget.video.num_frames} if budget.video else {}
    bb = create_backbone(spec.backbone, spec.weights, image_size=budget.image_size, **frames)
    method = build_method(spec.method, dict(spec.overrides), preset=spec.preset)
    torch.manual_seed(spec.seed)
    count = prepare(bb.model, method, task.num_classes)
    row.update(count.as_dict())
    model = bb.model.to(device)
    row["flops_per_image"] = flops_per_image(model, budget.image_size, device)

    tr, ev, skipped = run_splits(
        task, spec.phase, budget, bb.mean, bb.std, spec.data_dir, spec.seed
    )
    row["data_hash"] = f"{tr.sha256}+{ev.sha256}"
    row["data_skipped"] = skipped
    desc = f"{spec.method} {task.name} {spec.phase}"
    stats = train(
        model,
        tr,
        budget,
        spec.lr,
        spec.weight_decay,
        spec.seed,
        device,
        progress=spec.progress,
        desc=desc,
        workers=spec.data_workers,
    )
    acc, eval_ips = evaluate(model, ev, budget, device, workers=spec.data_workers)
    row["val_top1" if spec.phase == "search" else "test_top1"] = acc
    mem, kind = peak_memory(device)
    row.update(
        train_loss=stats.train_loss,
        train_time_s=stats.train_time_s,
        train_images_per_s=stats.train_images_per_s,
        eval_images_per_s=eval_ips,
        peak_mem_bytes=mem,
        peak_mem_kind=kind,
        checkpoint_bytes=float(checkpoint_bytes(model)),
        wall_time_s=time.perf_counter() - t_start,
        status="ok",
        error="",
    )
    return row


# ------------------------------------------------------------------------------------ sweep --
NO_TRIAL_OK = "no search trial finished with status ok"


@dataclass
class Sweep:
    """The runs of one method of a ``pebench run`` invocation, with its resolved inputs."""

    method: str
    preset: str
    overrides: dict[str, Any]
    budget: Budget
    tasks: list[TaskSpec]
    seeds: tuple[int, ...]
    backbone: str
    weights: str | None
    results_dir: Path
    data_dir: str | None = None
    device: str = "auto"
    threads: int | None = None
    nproc: int = 1
    data_workers: int = 0
    progress: bool = True
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        # computed once per sweep, not per row: the weights tag hashes the whole weights file
        self._static = {
            "method_config": build_method(self.method, self.overrides, self.preset).config_json(),
            "method_origin": registry.origin(self.method),
            "method_reconstruction": bool(registry.get(self.method).reconstruction),
            "weights": weights_tag(self.backbone, self.weights),
        }
        # the data lineage of every task (format and manifest hash), read once, before any run:
        # a cache that was never prepared fails here, with the command that prepares it
        self._data = {
            t.name: describe_data(t, self.data_dir, self.budget.image_size) for t in self.tasks
        }

    @property
    def timeout(self) -> float:
        """Seconds one run may take (``timeout_s`` or the budget's)."""
        return self.timeout_s or self.budget.timeout_s

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
            **self._static,
            backbone=self.backbone,
            task=task.name,
            suite=task.suite,
            task_group=task.group,
            task_version=task.version,
            data_format=self._data[task.name][0],
            data_hash="",
            data_manifest=self._data[task.name][1],
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
        row["run_id"] = R.run_id(row)
        return row

    def spec(self, row: dict[str, Any]) -> RunSpec:
        """The child's view of a run."""
        return RunSpec(
            method=self.method,
            preset=self.preset,
            overrides=tuple(sorted(self.overrides.items())),
            backbone=self.backbone,
            weights=self.weights,
            task=row["task"],
            budget=self.budget.id,
            seed=row["seed"],
            phase=row["phase"],
            trial=row["trial"],
            lr=row["lr"],
            weight_decay=row["weight_decay"],
            data_dir=self.data_dir,
            device=self.device,
            threads=self.threads,
            progress=self.progress,
            base_row=row,
            nproc=self.nproc,
            data_workers=self.data_workers,
        )

    def search_specs(self, task: TaskSpec) -> list[RunSpec]:
        """The search trials of ``task`` (train → val), in grid order."""
        return [
            self.spec(self.base_row(task, "search", i, lr, wd, self.budget.search_seed))
            for i, (lr, wd) in enumerate(self.budget.trials())
        ]

    def final_specs(self, task: TaskSpec, search_rows: list[dict[str, Any]]) -> list[RunSpec]:
        """The final runs of ``task`` (trainval → test, one per seed) given its search rows.

        Without a search trial ``ok`` the finals are placeholders (``trial`` -1, NaN lr/wd) that
        are never executed: :meth:`write_placeholders` records them as ``failed`` rows.
        """
        best = select_trial(search_rows)
        out = []
        for seed in self.seeds:
            if best is None:
                out.append(self.spec(self.base_row(task, "final", -1, math.nan, math.nan, seed)))
                continue
            lr, wd = best["lr"], best["weight_decay"]
            base = self.base_row(task, "final", best["trial"], lr, wd, seed)
            base["val_top1"] = best["val_top1"]
            out.append(self.spec(base))
        return out

    def write_placeholders(self, specs: list[RunSpec]) -> list[dict[str, Any]]:
        """Record the finals of a task whose search had no ``ok`` trial; returns their rows."""
        rows = []
        for spec in specs:
            base = dict(spec.base_row, status="failed", error=NO_TRIAL_OK)
            if R.finished(self.results_dir, base["run_id"]) is None:
                R.write_row(self.results_dir, base)
            rows.append(R.read_csv(R.run_path(self.results_dir, base["run_id"]))[0])
        return rows

    def drop_stale_placeholders(self, task: TaskSpec) -> None:
        """Delete placeholder finals written while no trial had succeeded (obsolete now)."""
        for seed in self.seeds:
            stale = self.base_row(task, "final", -1, math.nan, math.nan, seed)["run_id"]
            R.run_path(self.results_dir, stale).unlink(missing_ok=True)

    def run(
        self,
        on_row: Callable[[dict[str, Any]], None] | None = None,
        executor: Any = None,
    ) -> list[dict[str, Any]]:
        """Execute the sweep (locally, one run at a time, unless ``executor`` is given).

        Returns every row (search and final) in grid order: per task, its trials, then its
        finals by seed.
        """
        from pebench.executors import LocalExecutor

        if executor is None:
            with LocalExecutor() as local:
                return dispatch([self], local, on_row)
        return dispatch([self], executor, on_row)


def select_trial(search_rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Best search trial by validation accuracy; ties go to the smaller lr, then smaller wd."""
    ok = [r for r in search_rows if r["status"] == "ok" and not math.isnan(r["val_top1"])]
    if not ok:
        return None
    return min(ok, key=lambda r: (-r["val_top1"], r["lr"], r["weight_decay"]))


# --------------------------------------------------------------------------------- dispatch --
@dataclass
class _Cell:
    """One (method, task) of a dispatch: its search trials, then its finals."""

    sweep: Sweep
    task: TaskSpec
    search: list[RunSpec]
    finals: list[RunSpec] | None = None
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    def search_done(self) -> bool:
        return all(s.base_row["run_id"] in self.rows for s in self.search)

    def ordered_rows(self) -> list[dict[str, Any]]:
        return [self.rows[s.base_row["run_id"]] for s in self.search + (self.finals or [])]


def dispatch(
    sweeps: list[Sweep],
    executor: Any,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    poll_s: float = 2.0,
) -> list[dict[str, Any]]:
    """Run the grid of ``sweeps`` on ``executor``; returns every row in grid order.

    Each (method, task) is a pipeline: its search trials are submitted at once (together with
    every other task's, so an engine can batch them into one array job), and its finals are
    submitted as soon as all of *its* search rows are recorded — no global barrier. Runs whose
    row already has a final status are not resubmitted (resume), and a run whose live marker
    names another worker (an earlier invocation's job still running) is waited for, not
    duplicated: no two workers ever write the same row file.

    Args:
        sweeps: the planned sweeps (one per method), all validated.
        executor: a :mod:`pebench.executors` executor (``submit``, ``wait``, ``result``).
        on_row: called with each row as it is recorded (completion order).
        poll_s: how often runs owned by another worker are checked.
    """
    from tqdm.auto import tqdm

    cells = [_Cell(s, t, s.search_specs(t)) for s in sweeps for t in s.tasks]
    total = sum(len(c.search) + len(c.sweep.seeds) for c in cells)
    budgets = ",".join(dict.fromkeys(s.budget.id for s in sweeps))
    progress = any(s.progress for s in sweeps)
    bar = tqdm(total=total, desc=f"{executor.name} {budgets}", disable=not progress)
    handles: list[Any] = []
    owners: list[tuple[_Cell, RunSpec]] = []
    foreign: list[tuple[_Cell, RunSpec]] = []
    # run -> the cells waiting for its row: a run two cells share (``--method lora,lora``) is
    # submitted once
    waiting: dict[tuple[Path, str], list[_Cell]] = {}

    def key(cell: _Cell, spec: RunSpec) -> tuple[Path, str]:
        return cell.sweep.results_dir, spec.base_row["run_id"]

    def record(cell: _Cell, row: dict[str, Any]) -> None:
        for c in waiting.pop((cell.sweep.results_dir, row["run_id"]), [cell]):
            c.rows[row["run_id"]] = row
            bar.update(1)
            bar.set_postfix_str(f"{row['method']} {row['task']} {row['phase']} {row['status']}")
            if on_row:
                on_row(row)

    def submit(items: list[tuple[_Cell, RunSpec]]) -> None:
        if items:
            handles.extend(
                executor.submit([(s, c.sweep.results_dir, c.sweep.timeout) for c, s in items])
            )
            owners.extend(items)

    def launch(items: list[tuple[_Cell, RunSpec]]) -> None:
        todo = []
        for cell, spec in items:
            if key(cell, spec) in waiting:
                waiting[key(cell, spec)].append(cell)
                continue
            results, rid = key(cell, spec)
            if (done := R.finished(results, rid)) is not None:
                record(cell, done)
                continue
            waiting[key(cell, spec)] = [cell]
            if (marker := read_marker(results, rid)) is not None and marker_is_live(marker):
                foreign.append((cell, spec))
            else:
                todo.append((cell, spec))
        submit(todo)

    def advance() -> None:
        ready = []
        for cell in cells:
            if cell.finals is not None or not cell.search_done():
                continue
            search_rows = [cell.rows[s.base_row["run_id"]] for s in cell.search]
            cell.finals = cell.sweep.final_specs(cell.task, search_rows)
            if cell.finals and cell.finals[0].trial == -1:
                for row in cell.sweep.write_placeholders(cell.finals):
                    record(cell, row)
            else:
                cell.sweep.drop_stale_placeholders(cell.task)
                ready.extend((cell, s) for s in cell.finals)
        launch(ready)

    def check_foreign() -> None:
        for item in list(foreign):
            results, rid = key(*item)
            marker = read_marker(results, rid)
            if marker is not None and marker_is_live(marker):
                continue
            foreign.remove(item)
            path = R.run_path(results, rid)
            if marker is None and path.exists():  # the other worker finished it
                record(item[0], R.read_csv(path)[0])
            else:  # its worker is gone: run it here
                submit([item])

    try:
        launch([(c, s) for c in cells for s in c.search])
        advance()
        while handles or foreign:
            if handles:
                done = executor.wait(handles, timeout=poll_s if foreign else None)
            else:
                done = []
                time.sleep(poll_s)
            for i in sorted(done, reverse=True):
                cell, spec = owners.pop(i)
                record(cell, executor.result(handles.pop(i), spec, cell.sweep.results_dir))
            check_foreign()
            advance()
    except BaseException:
        executor.cancel(handles)  # no orphan job may start a run after this sweep gave up
        raise
    finally:
        bar.close()
    return [row for cell in cells for row in cell.ordered_rows()]


def plan_sweep(
    method: str,
    tasks: str | None = None,
    budget: str | None = None,
    seeds: list[int] | None = None,
    backbone: str | None = None,
    weights: str | None = None,
    overrides: dict[str, Any] | None = None,
    preset: str | None = None,
    results_dir: str | Path = "results",
    load_weights: bool = True,
    **kwargs: Any,
) -> Sweep:
    """Resolve and validate every input before anything runs or is written.

    ``load_weights=False`` skips loading the backbone once (``pebench status`` needs only the
    run ids); a ``data_dir`` is made absolute, since workers may start elsewhere.

    Raises:
        pebench.registry.RegistryError: unknown method, task, suite or budget (with suggestions).
        pebench.method.MethodConfigError: bad preset or ``--set`` key/value.
        pebench.backbones.BackboneError: unknown backbone; missing or unreadable weights file.
    """
    name, spec_preset = split_spec(method)
    preset = preset or spec_preset or "default"
    overrides = dict(overrides or {})
    build_method(name, overrides, preset=preset)  # validates name, preset, keys and values
    task_specs = resolve_tasks(tasks or "demo")
    from pebench.datasets import get_suite

    budget_id = budget or get_suite(task_specs[0].suite).default_budget
    b = get_budget(budget_id)
    for spec in task_specs:
        check_fits(spec, b)  # an image budget for a video task (or the reverse) is refused
    backbone = backbone or b.backbone
    known_backbone(backbone)
    weights_tag(backbone, weights)  # missing file -> error naming the path, before loading it
    if load_weights and weights != RANDOM:
        create_backbone(backbone, weights, image_size=b.image_size)  # fail fast, before any run
    if kwargs.get("data_dir"):
        kwargs["data_dir"] = os.path.abspath(kwargs["data_dir"])
    return Sweep(
        method=name,
        preset=preset,
        overrides=overrides,
        budget=b,
        tasks=task_specs,
        seeds=tuple(seeds) if seeds else b.seeds,
        backbone=backbone,
        weights=weights,
        results_dir=Path(results_dir),
        **kwargs,
    )


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
            "weights": sweep._static["weights"],
            "results": str(sweep.results_dir),
            "cpus": os.cpu_count(),
        }
    )


__all__ = [
    "RunSpec",
    "Sweep",
    "classify",
    "dispatch",
    "execute",
    "marker_is_live",
    "marker_path",
    "plan_sweep",
    "read_marker",
    "record_lost",
    "run_one",
    "select_trial",
]
