"""The ``ray`` engine: one Ray task per run, on a cluster or a Ray started here.

Its executor is :class:`pebench.sweep.executors.RayExecutor`; its own options are
``--ray-address``, ``--cpus-per-run`` and ``--gpus-per-run``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, ClassVar

from pebench.sweep.engines.base import Engine, ExecutorError, at_least, flag, require


@dataclass(frozen=True)
class RayEngine(Engine):
    """Ray: each run a remote task with its CPU and GPU request."""

    name: ClassVar[str] = "ray"
    gpu_flag: ClassVar[str] = "--gpus-per-run"
    ray_address: str | None = flag(
        "--ray-address", help="ray: cluster address (default: start a local Ray)"
    )
    cpus_per_run: float | None = flag(
        "--cpus-per-run", parse=float, help="ray: CPUs per run (default 1)"
    )
    gpus_per_run: float | None = flag(
        "--gpus-per-run", parse=float, help="ray: GPUs per run (default 0)"
    )

    def gpus(self) -> float:
        """``--gpus-per-run``."""
        return self.gpus_per_run or 0

    def validate(self) -> None:
        """Requests >= 0 (CPUs > 0), no ``--max-parallel`` with an address, Ray installed.

        Raises:
            ExecutorError: naming the option, what is allowed, or the install command.
        """
        at_least("--cpus-per-run", self.cpus_per_run, 0)
        at_least("--gpus-per-run", self.gpus_per_run, 0)
        if self.cpus_per_run is not None and self.cpus_per_run <= 0:
            raise ExecutorError(f"--cpus-per-run must be > 0, got {self.cpus_per_run}")
        if self.ray_address and self.place.max_parallel is not None:
            raise ExecutorError(
                "--max-parallel sizes a Ray started here; with --ray-address the cluster's "
                "resources and --cpus-per-run/--gpus-per-run decide the parallelism"
            )
        super().validate()
        require("ray", self.name)

    def make(self) -> Any:
        """A :class:`~pebench.sweep.executors.RayExecutor` (``--max-parallel`` sizes its Ray)."""
        from pebench.sweep.executors import RayExecutor

        cpus = self.cpus_per_run or 1
        most = self.place.max_parallel
        return RayExecutor(
            address=self.ray_address,
            cpus_per_run=cpus,
            gpus_per_run=self.gpus_per_run or 0,
            num_cpus=math.ceil(most * cpus) if most else None,
        )

    @staticmethod
    def job_info() -> tuple[str, str]:
        """The Ray task id and the worker's log file (Ray redirects its stderr there)."""
        import ray

        try:
            log = os.readlink("/proc/self/fd/2")
        except OSError:
            log = ""
        return ray.get_runtime_context().get_task_id() or "", log
