"""Executors: where the runs of a sweep execute (this machine, Slurm through submitit, or Ray).

pebench never schedules jobs itself: :func:`pebench.sweep.dispatch.dispatch` expands the grid
and hands batches of runs to an executor, which passes them to an existing engine — a thread pool
of local worker processes, submitit (Slurm array jobs; its ``local`` cluster without Slurm), or
Ray (one remote task per run with its CPU/GPU request). Every worker calls
:func:`pebench.sweep.worker.run_one`, so timeouts, OOM kills and failures become rows exactly as
in a local run, each run writes only its own row file, and the row records ``executor``, ``job_id``
and ``log_path``.

A job that dies without writing a row (killed, node failure) is recorded by the dispatcher as a
``failed`` row with its job id and log path: ``pebench status`` shows it as failed, never as a
silent gap, and a resubmitted sweep runs it again (``failed`` is not a final status).

An executor has ``name``, ``submit(items) -> handles`` (one handle per ``(spec, results_dir,
timeout_s)``), ``wait(handles, timeout) -> indices of finished handles``, ``result(handle, spec,
results_dir) -> row``, ``cancel(handles)`` and ``close()``; it is a context manager. Which
executor a ``pebench run`` gets, with which options, is its engine's (:mod:`pebench.sweep.engines`:
one module per engine declaring its flags, checking them, making its executor and telling a
worker its job id).
"""

from __future__ import annotations

import math
import os
import queue
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import replace
from pathlib import Path
from typing import Any

from pebench.run import RunSpec
from pebench.sweep.engines.base import INSTALL_HINT, ExecutorError, require
from pebench.sweep.worker import record_lost, run_one, start_forkserver

Item = tuple[RunSpec, Path, float]

#: concurrent local runs by default on a CPU-only machine (memory, not cores, limits beyond it)
CPU_PARALLEL_CAP = 8


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ----------------------------------------------------------------------------------- worker --
def work(spec: RunSpec, results_dir: str, timeout_s: float, executor: str) -> dict[str, Any]:
    """The body of one engine job: :func:`pebench.sweep.worker.run_one`, tagged with the job.

    ``executor`` names the engine (:mod:`pebench.sweep.engines`), which says which job this is.
    """
    from pebench.sweep.engines import job_info

    job_id, log_path = job_info(executor)
    row = dict(spec.base_row, executor=executor, job_id=job_id, log_path=log_path)
    return run_one(replace(spec, base_row=row), results_dir, timeout_s)


def _for_worker(spec: RunSpec, threads: int | None, quiet: bool, device_runs: int = 1) -> RunSpec:
    """A spec as a worker runs it: threads filled in (unless set), bars off if ``quiet``.

    ``device_runs`` (how many runs may share its device) goes into its row.
    """
    o = spec.options
    return replace(
        spec,
        options=replace(
            o,
            threads=o.threads or threads,
            progress=o.progress and not quiet,
            device_runs=device_runs,
        ),
    )


class _Base:
    name = "base"

    def __enter__(self) -> _Base:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the engine (nothing by default)."""

    def _lost(
        self, spec: RunSpec, results_dir: Path, err: BaseException, job: str, log: str
    ) -> dict[str, Any]:
        reason = f"{self.name} job {job or '?'} ended without a row: {type(err).__name__}: {err}"
        if log:
            reason += f" (log: {log})"
        return record_lost(spec, results_dir, reason, self.name, job, log)


# ------------------------------------------------------------------------------------ local --
#: device files of a machine with a CUDA (or ROCm) GPU: where none exists torch sees no GPU
GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")


def cuda_available() -> bool:
    """``torch.cuda.is_available()``, without importing torch where no GPU device file exists.

    Planning and dispatching runs that are all recorded then import no torch on a CPU machine.
    """
    if not any(os.path.exists(node) for node in GPU_NODES):
        return False
    import torch

    return torch.cuda.is_available()


def visible_gpus(device: str = "auto") -> list[str]:
    """The GPU ids local runs may be pinned to.

    ``[]`` on CPU, and for any device but ``auto``/``cuda`` (``--device cuda:N`` picks its GPU).
    """
    if device not in ("auto", "cuda") or not cuda_available():
        return []
    import torch

    count = torch.cuda.device_count()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in env.split(",") if d.strip()] if env else []
    return (ids or [str(i) for i in range(count)])[:count]


def gpu_groups(gpus: list[str], nproc: int) -> list[str]:
    """The GPU sets runs are pinned to: ``nproc`` GPUs each (``CUDA_VISIBLE_DEVICES`` values).

    A DDP run of ``nproc`` processes puts rank ``r`` on the ``r``-th GPU it sees, so it needs
    that many; GPUs left over (fewer than ``nproc``) stay idle.

    Raises:
        ExecutorError: more processes per run than GPUs (nccl needs one GPU per rank).
    """
    if gpus and nproc > len(gpus):
        raise ExecutorError(
            f"--nproc-per-run {nproc} needs {nproc} GPUs per run (nccl: one per process), but "
            f"{len(gpus)} are visible ({','.join(gpus)}); use at most {len(gpus)}, or --device "
            "cpu (gloo)"
        )
    return [",".join(gpus[i : i + nproc]) for i in range(0, len(gpus) - nproc + 1, nproc)]


class LocalExecutor(_Base):
    """Runs on this machine: at most ``max_parallel`` worker threads, each driving one child.

    Default parallelism: ``runs_per_device`` runs per GPU, or per set of ``nproc_per_run`` GPUs
    for DDP runs (each child pinned to its set with ``CUDA_VISIBLE_DEVICES``; slots go round the
    sets, so each carries that many); ``runs_per_device`` runs on a GPU named by
    ``--device cuda:N`` (not pinned: the device names it); or on CPU one run per core up to
    :data:`CPU_PARALLEL_CAP` (small models train faster as several single-threaded processes
    than as one process using every core, and never oversubscribe). Torch threads are divided
    among concurrent runs unless a spec sets its own.

    Raises:
        ExecutorError: ``nproc_per_run`` larger than the visible GPUs.
    """

    name = "local"

    def __init__(
        self,
        max_parallel: int | None = None,
        device: str = "auto",
        runs_per_device: int = 1,
        nproc_per_run: int = 1,
    ) -> None:
        groups: list[str | None] = list(gpu_groups(visible_gpus(device), nproc_per_run))
        if device.startswith("cuda:"):
            groups = [None]  # one GPU, named by the runs' device
        by_gpu = len(groups) * runs_per_device
        self.max_parallel = max_parallel or by_gpu or min(_cpus(), CPU_PARALLEL_CAP)
        self._slots: queue.Queue[str | None] = queue.Queue()
        for i in range(self.max_parallel):
            self._slots.put(groups[i % len(groups)] if groups else None)
        #: the most runs at once on one run's device (a GPU set, or the CPU)
        self._device_runs = math.ceil(self.max_parallel / max(1, len(groups)))
        many = self.max_parallel > 1
        self._threads = max(1, _cpus() // self.max_parallel) if many else None
        self._quiet = many
        self._pool = ThreadPoolExecutor(self.max_parallel, thread_name_prefix="pebench-run")

    def _run(self, spec: RunSpec, results_dir: Path, timeout_s: float) -> dict[str, Any]:
        gpu = self._slots.get()
        try:
            spec = _for_worker(spec, self._threads, self._quiet, self._device_runs)
            if gpu is not None:
                env = (*spec.options.env, ("CUDA_VISIBLE_DEVICES", gpu))
                spec = replace(spec, options=replace(spec.options, env=env))
            return work(spec, str(results_dir), timeout_s, self.name)
        finally:
            self._slots.put(gpu)

    def submit(self, items: list[Item]) -> list[Future]:
        """One pool task per run (the first starts the forkserver: nothing to run, no torch)."""
        if items:
            start_forkserver()  # here, in the main thread: run processes never see a Ctrl-C
        return [self._pool.submit(self._run, *item) for item in items]

    def wait(self, handles: list[Future], timeout: float | None = None) -> list[int]:
        """Indices of finished runs (blocks until one finishes or ``timeout``)."""
        done, _ = futures_wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return [i for i, h in enumerate(handles) if h in done]

    def result(self, handle: Future, spec: RunSpec, results_dir: Path) -> dict[str, Any]:
        """The run's row (a worker exception becomes a failure row)."""
        try:
            return handle.result()
        except Exception as err:
            return self._lost(spec, results_dir, err, "", "")

    def cancel(self, handles: list[Future]) -> None:
        """Drop runs that have not started."""
        for h in handles:
            h.cancel()

    def close(self) -> None:
        """Wait for started runs and stop the pool."""
        self._pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------ slurm --
class SlurmExecutor(_Base):
    """Slurm through submitit: each :meth:`submit` is one array job (one task per run).

    ``cluster`` is submitit's (``None``: Slurm when ``sbatch`` exists, else its local processes;
    ``"local"`` in tests). ``time_min`` defaults to the longest run timeout plus 5 minutes.
    """

    name = "slurm"

    def __init__(
        self,
        log_dir: str | Path,
        partition: str | None = None,
        time_min: int | None = None,
        gpus_per_job: int = 0,
        cpus_per_job: int | None = None,
        max_parallel: int | None = None,
        cluster: str | None = None,
        poll_s: float = 1.0,
    ) -> None:
        submitit = require("submitit", self.name)
        self.log_dir = Path(log_dir).absolute()
        self._ex = submitit.AutoExecutor(folder=self.log_dir, cluster=cluster)
        self.cluster = self._ex.cluster
        params: dict[str, Any] = {"name": "pebench", "nodes": 1, "tasks_per_node": 1}
        params["gpus_per_node"] = gpus_per_job
        if cpus_per_job:
            params["cpus_per_task"] = cpus_per_job
        if partition:
            params["slurm_partition"] = partition
        if max_parallel:
            params["slurm_array_parallelism"] = max_parallel
        self._ex.update_parameters(**params)
        self._time_min, self._threads, self._poll_s = time_min, cpus_per_job, poll_s

    def submit(self, items: list[Item]) -> list[Any]:
        """One array job for all ``items``."""
        longest = max(t for _, _, t in items)
        self._ex.update_parameters(timeout_min=self._time_min or math.ceil(longest / 60) + 5)
        with self._ex.batch():
            jobs = [
                self._ex.submit(
                    work, _for_worker(s, self._threads, True), str(r.absolute()), t, self.name
                )
                for s, r, t in items
            ]
        return jobs

    def wait(self, handles: list[Any], timeout: float | None = None) -> list[int]:
        """Indices of finished jobs (polls submitit, which rate-limits its Slurm queries)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            done = [i for i, job in enumerate(handles) if job.done()]
            if done or (deadline is not None and time.monotonic() >= deadline):
                return done
            time.sleep(self._poll_s)

    def result(self, handle: Any, spec: RunSpec, results_dir: Path) -> dict[str, Any]:
        """The job's row, or a failure row naming the job and its log if it died."""
        try:
            return handle.result()
        except Exception as err:
            return self._lost(spec, results_dir, err, str(handle.job_id), str(handle.paths.stderr))

    def cancel(self, handles: list[Any]) -> None:
        """Cancel jobs still queued or running."""
        for job in handles:
            if not job.done():
                job.cancel(check=False)


# -------------------------------------------------------------------------------------- ray --
class RayExecutor(_Base):
    """Ray: one remote task per run requesting ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs.

    Connects to ``address`` (a running cluster, e.g. ``ray://head:10001`` or ``auto``), reuses an
    initialised Ray, or starts a local one with ``num_cpus`` CPUs (default: all). Tasks are not
    retried by Ray: a crashed worker becomes a failure row, rerun on resubmission.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        cpus_per_run: float = 1,
        gpus_per_run: float = 0,
        num_cpus: int | None = None,
    ) -> None:
        self._ray = ray = require("ray", self.name)
        self._started = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(
                    num_cpus=num_cpus or _cpus(),
                    include_dashboard=False,
                    log_to_driver=False,
                    object_store_memory=100 * 1024**2,  # rows are tiny
                )
            self._started = True
        self._remote = ray.remote(work).options(
            num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0
        )
        self._threads = max(1, int(cpus_per_run))
        self._device_runs = int(1 / gpus_per_run) if 0 < gpus_per_run < 1 else 1

    def submit(self, items: list[Item]) -> list[Any]:
        """One remote task per run."""
        return [
            self._remote.remote(
                _for_worker(s, self._threads, True, self._device_runs),
                str(r.absolute()),
                t,
                self.name,
            )
            for s, r, t in items
        ]

    def wait(self, handles: list[Any], timeout: float | None = None) -> list[int]:
        """Indices of finished tasks."""
        ready, _ = self._ray.wait(handles, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = self._ray.wait(handles, num_returns=len(handles), timeout=0)
        ids = {ref.hex() for ref in ready}
        return [i for i, ref in enumerate(handles) if ref.hex() in ids]

    def result(self, handle: Any, spec: RunSpec, results_dir: Path) -> dict[str, Any]:
        """The task's row, or a failure row naming the task if its worker died."""
        try:
            return self._ray.get(handle)
        except Exception as err:
            return self._lost(spec, results_dir, err, handle.task_id().hex(), "")

    def cancel(self, handles: list[Any]) -> None:
        """Cancel tasks still pending or running."""
        for ref in handles:
            self._ray.cancel(ref, force=True)

    def close(self) -> None:
        """Shut down the Ray instance this executor started."""
        if self._started:
            self._ray.shutdown()
            self._started = False


__all__ = [
    "INSTALL_HINT",
    "ExecutorError",
    "LocalExecutor",
    "RayExecutor",
    "SlurmExecutor",
    "gpu_groups",
    "require",
    "visible_gpus",
    "work",
]
