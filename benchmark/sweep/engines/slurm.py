"""The ``slurm`` engine: Slurm array jobs through submitit (its local processes without Slurm).

Its executor is :class:`pebench.sweep.executors.SlurmExecutor`; its own options are
``--partition``, ``--time-min``, ``--gpus-per-job``, ``--cpus-per-job`` and ``--log-dir``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pebench.sweep.engines.base import Engine, at_least, flag, require


@dataclass(frozen=True)
class SlurmEngine(Engine):
    """Slurm through submitit: one array job per batch of runs."""

    name: ClassVar[str] = "slurm"
    gpu_flag: ClassVar[str] = "--gpus-per-job"
    partition: str | None = flag("--partition", help="slurm: partition")
    time_min: int | None = flag(
        "--time-min", parse=int, help="slurm: minutes per job (default: timeout + 5)"
    )
    gpus_per_job: int | None = flag(
        "--gpus-per-job", parse=int, help="slurm: GPUs per job (default 0)"
    )
    cpus_per_job: int | None = flag(
        "--cpus-per-job", parse=int, help="slurm: CPUs per job (= torch threads)"
    )
    log_dir: str | None = flag("--log-dir", help="slurm: folder of job logs (default pebench-logs)")

    def gpus(self) -> float:
        """``--gpus-per-job``."""
        return self.gpus_per_job or 0

    def validate(self) -> None:
        """Counts >= 0, minutes and CPUs >= 1, submitit installed; then the common checks.

        Raises:
            ExecutorError: naming the option, what is allowed, or the install command.
        """
        for name in ("time_min", "gpus_per_job", "cpus_per_job"):
            at_least(f"--{name.replace('_', '-')}", getattr(self, name), 0)
        at_least("--time-min", self.time_min, 1)
        at_least("--cpus-per-job", self.cpus_per_job, 1)
        super().validate()
        require("submitit", self.name)

    def make(self) -> Any:
        """A :class:`~pebench.sweep.executors.SlurmExecutor`."""
        from pebench.sweep.executors import SlurmExecutor

        return SlurmExecutor(
            log_dir=self.log_dir or "pebench-logs",
            partition=self.partition,
            time_min=self.time_min,
            gpus_per_job=self.gpus_per_job or 0,
            cpus_per_job=self.cpus_per_job,
            max_parallel=self.place.max_parallel,
        )

    @staticmethod
    def job_info() -> tuple[str, str]:
        """The Slurm job id and its stderr log (submitit's job environment)."""
        import submitit

        env = submitit.JobEnvironment()
        return str(env.job_id), str(env.paths.stderr)
