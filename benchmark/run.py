"""One run's description: its spec, its options, how an exception becomes a status, its model.

A run is (method + config, backbone + weights, task, budget, seed, phase, trial) → one result row.
Its identity lives in one place, the row the planner builds (:attr:`RunSpec.base_row`, whose
``run_id`` hashes it); how it executes (device, threads, data workers, processes, timeout) lives
in one frozen :class:`RunOptions` built once by the CLI and carried unchanged to the run.

Importing this module needs no torch: workers and engines unpickle a :class:`RunSpec` cheaply;
:func:`build_model` imports the stack when a stage calls it. How a run executes (a supervisor
and its training and prediction stages) is :mod:`pebench.supervise`. Everything that schedules
runs (:mod:`pebench.sweep`) imports this module, never the reverse.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunOptions:
    """How runs execute, never what they compute (so none of it is in the run identity).

    Built once by the CLI (or a test) and carried to every run of a sweep. Adding an option is one
    field here, one CLI argument and the line that uses it.

    Attributes:
        data_dir: prepared cache (image suites) or raw data folder (video); absolute.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        threads: torch threads per run (``None``: torch's default).
        nproc: processes per run; > 1 launches ``torchrun`` with DDP (:mod:`pebench.sweep.ddp`).
        data_workers: DataLoader worker processes for per-example datasets (video decoding).
        progress: show progress bars.
        timeout_s: seconds one run may take (``None``: the budget's).
        env: environment of the run's process, set before anything runs
            (e.g. ``CUDA_VISIBLE_DEVICES`` from the local executor).
        compile: run training and evaluation through ``torch.compile`` (recorded in the row's
            ``compile`` column; not part of the identity: like the device or the thread count
            it changes the computation's round-off only, never what is computed).
        device_share: fraction of the free device memory a run may fill with device-resident
            data (divided by the runs sharing one GPU); splits that do not fit stream.
        trackers: where epoch records go besides the run's log (``tensorboard``, ``wandb``).
        epoch_val: score the validation split after every epoch of a search run (logged only;
            selection still uses the last epoch).
        device_runs: how many runs may run at once on this run's device (set by the executor:
            its slots per GPU, or the concurrent runs sharing the CPU); recorded in the row.
        keep_state: keep the run's tunable state (what was counted and evaluated) beside its
            row (:meth:`pebench.store.RunStore.state_path`).
    """

    data_dir: str | None = None
    device: str = "auto"
    threads: int | None = None
    nproc: int = 1
    data_workers: int = 0
    progress: bool = True
    timeout_s: float | None = None
    env: tuple[tuple[str, str], ...] = ()
    compile: bool = False
    device_share: float = 0.5
    trackers: tuple[str, ...] = ()
    epoch_val: bool = False
    device_runs: int = 1
    keep_state: bool = False


@dataclass(frozen=True, eq=False)
class RunSpec:
    """Everything a process needs to execute one run (plain data, picklable).

    The planner resolved every name already: the spec carries the frozen budget and task spec
    themselves, so the run process never looks a name up again (a budget file is carried as
    its values, not re-read or found through the environment).

    Attributes:
        base_row: the run's identity and static metadata, exactly what a failure row records
            (built by :meth:`pebench.sweep.plan.Sweep.base_row`; ``run_id`` hashes its identity).
        budget: the :class:`pebench.budget.Budget` the run trains under (``None``: resolved from
            the row's built-in budget id, for specs built by hand).
        task: the :class:`pebench.datasets.TaskSpec` of the run's task (``None``: resolved from
            the row's task name).
        overrides: the ``--set`` overrides the method is built with (its preset is in the row).
        weights: the weights as given (a path, ``random`` or ``None``); the row holds its tag.
        options: how the run executes.
    """

    base_row: dict[str, Any]
    budget: Any = None
    task: Any = None
    overrides: tuple[tuple[str, Any], ...] = ()
    weights: str | None = None
    options: RunOptions = RunOptions()

    def _key(self) -> tuple[Any, ...]:
        return self.base_row.get("run_id"), self.overrides, self.weights, self.options

    def __eq__(self, other: object) -> bool:
        """Same run (``run_id``), built and executed the same way."""
        return isinstance(other, RunSpec) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    # the identity fields, read from the row (its one home)
    @property
    def run_id(self) -> str:
        """The run's id (hash of its identity)."""
        return self.base_row["run_id"]

    @property
    def method(self) -> str:
        """Registered method name."""
        return self.base_row["method"]

    @property
    def preset(self) -> str:
        """Method preset."""
        return self.base_row["preset"]

    @property
    def backbone(self) -> str:
        """Timm backbone name."""
        return self.base_row["backbone"]

    @property
    def task_name(self) -> str:
        """The task's canonical name."""
        return self.base_row["task"]

    @property
    def phase(self) -> str:
        """``search`` or ``final``."""
        return self.base_row["phase"]

    @property
    def trial(self) -> int:
        """Index of the trial in the budget's grid (-1: a placeholder final)."""
        return self.base_row["trial"]

    @property
    def seed(self) -> int:
        """The run's seed."""
        return self.base_row["seed"]

    @property
    def lr(self) -> float:
        """Learning rate."""
        return self.base_row["lr"]

    @property
    def weight_decay(self) -> float:
        """Weight decay."""
        return self.base_row["weight_decay"]

    def resolved(self) -> tuple[Any, Any]:
        """``(budget, task spec)``: the carried values, or looked up by the row's names."""
        from pebench.budget import get_budget
        from pebench.datasets import get_task

        budget = self.budget if self.budget is not None else get_budget(self.base_row["budget"])
        task = self.task if self.task is not None else get_task(self.task_name)
        return budget, task


class StageError(Exception):
    """A stage failed: the row's status and error text (as :func:`pebench.run.error_text`)."""

    def __init__(self, status: str, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


#: characters of an error a row keeps
ERROR_CHARS = 2000
#: what CPU allocators say when memory runs out (torch raises a plain RuntimeError there)
_CPU_OOM = ("can't allocate memory", "not enough memory", "std::bad_alloc")


def classify(err: BaseException) -> str:
    """Map an exception raised by a run to its row status."""
    from pebench.train import Diverged

    if isinstance(err, StageError):  # what a stage process reported (it runs plugin code)
        return err.status if err.status in ("diverged", "oom") else "failed"
    if isinstance(err, Diverged):
        return "diverged"
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return "oom"
    if isinstance(err, RuntimeError) and any(s in str(err) for s in _CPU_OOM):
        return "oom"
    return "failed"


def error_text(err: BaseException, prefix: str = "") -> str:
    """The error a row records: type and message first (never cut), then the traceback's end.

    Call it inside the ``except`` block (it reads the traceback being handled). At most
    :data:`ERROR_CHARS` characters: a long message is shortened at its end, the traceback from
    its start (its last frames, where the error was raised, are kept).
    """
    if isinstance(err, StageError):  # the stage's own error text, traceback included
        return f"{prefix}{err.error}"[:ERROR_CHARS]
    head = f"{prefix}{type(err).__name__}: {err}"
    if len(head) >= ERROR_CHARS:
        return head[: ERROR_CHARS - 3] + "..."
    room = ERROR_CHARS - len(head) - 1
    tail = traceback.format_exc(limit=-4)  # the innermost frames: where it was raised
    return f"{head}\n{tail[-room:]}" if room > 0 else head


def device_of(opts: RunOptions) -> Any:
    """A run's device, with its index, and the process settings (:func:`pebench.device.setup`)."""
    from pebench.device import setup

    return setup(opts.device, opts.threads)


def build_model(spec: RunSpec, budget: Any, num_classes: int, row: dict[str, Any]) -> Any:
    """Backbone + method, prepared (frozen, head, trainable set): counts go into ``row``.

    The training and the prediction stage build it alike (the same seeds: the same constant
    buffers and the same initial tensors).
    """
    import torch

    from pebench.backbones import create_backbone
    from pebench.method import prepare
    from pebench.methods import build_method

    torch.manual_seed(0)  # the same backbone for every method and seed (matters for random init)
    frames = {"num_frames": budget.video.num_frames} if budget.video else {}
    bb = create_backbone(
        spec.backbone,
        spec.weights,
        image_size=budget.image_size,
        tag=spec.base_row["weights"],
        **frames,
    )
    method = build_method(spec.method, dict(spec.overrides), preset=spec.preset)
    planned, built = spec.base_row.get("method_config"), method.config_json()
    if planned is not None and built != planned:  # the row must say what trains
        from pebench.config import MethodConfigError

        raise MethodConfigError(
            f"method {spec.method!r} builds config {built} but its runs were "
            f"named with {planned}: methods/catalog.json is stale (python -m "
            "pebench.method_catalog)"
        )
    torch.manual_seed(spec.seed)
    row.update(prepare(bb.model, method, num_classes).as_dict())
    return bb


__all__ = [
    "ERROR_CHARS",
    "RunOptions",
    "RunSpec",
    "StageError",
    "build_model",
    "device_of",
    "classify",
    "error_text",
]
