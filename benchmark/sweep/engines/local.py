"""The ``local`` engine: runs on this machine, a pool of worker processes (the default).

Its executor is :class:`pebench.sweep.executors.LocalExecutor`; its own option is
``--runs-per-device``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pebench.sweep.engines.base import Engine, ExecutorError, at_least, flag


@dataclass(frozen=True)
class LocalEngine(Engine):
    """This machine: one run per GPU (or per GPU set for DDP), else one per CPU core up to 8."""

    name: ClassVar[str] = "local"
    runs_per_device: int | None = flag(
        "--runs-per-device",
        parse=int,
        help="local: concurrent runs sharing each GPU (default 1); small backbones or tasks "
        "fill a large GPU only with several; each run's device-resident data gets its share",
        elsewhere=" (Ray: --gpus-per-run 0.5 shares a GPU between two runs)",
    )

    def validate(self) -> None:
        """``--runs-per-device`` >= 1 and never with ``--max-parallel``; then the common checks.

        Raises:
            ExecutorError: naming the option and what is allowed.
        """
        if self.runs_per_device is not None:
            at_least("--runs-per-device", self.runs_per_device, 1)
            if self.place.max_parallel is not None:
                raise ExecutorError(
                    "--runs-per-device sets the parallelism (GPUs x runs per device); "
                    "do not combine it with --max-parallel"
                )
        super().validate()

    def check_ddp(self, nproc: int) -> None:
        """As many visible GPUs per run as processes (see ``executors.gpu_groups``)."""
        from pebench.sweep import executors

        executors.gpu_groups(executors.visible_gpus(self.place.device), nproc)

    def make(self) -> Any:
        """A :class:`~pebench.sweep.executors.LocalExecutor`."""
        from pebench.sweep.executors import LocalExecutor

        return LocalExecutor(
            max_parallel=self.place.max_parallel,
            device=self.place.device,
            runs_per_device=self.runs_per_device or 1,
            nproc_per_run=self.place.nproc_per_run,
        )
