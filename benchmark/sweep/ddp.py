"""One run on several processes with torch DDP: the entry point ``torchrun`` launches.

``python -m torch.distributed.run --standalone --nproc-per-node N -m pebench.sweep.ddp SPEC
RESULTS`` (see :func:`launch_command`) starts ``N`` ranks that each read the same :class:`RunSpec`
(JSON, see :func:`write_spec`), join one process group (``nccl`` on CUDA, one GPU per
``LOCAL_RANK``; ``gloo`` on CPU) and call :func:`pebench.run.execute`; :mod:`pebench.train` sees the
group and trains with ``DistributedDataParallel`` on the same global batches as a single process.
Only rank 0 writes the row and its record (:meth:`pebench.store.RunStore.record`); its ``device``
says ``ddp Nx ...``.

Failures: a rank that raises reports its error in the rendezvous store and waits (briefly) for
rank 0, whose watcher thread writes the ``failed``/``oom``/``diverged`` row naming that rank and
ends rank 0, which may be blocked in a collective. Collectives time out after
``PEBENCH_DDP_TIMEOUT_S`` seconds (default :data:`DEFAULT_TIMEOUT_S`), so a hung rank fails the
others instead of hanging them. A rank killed outright (SIGKILL) reports nothing: ``torchrun``
then stops the others and the caller records the run as it does for any child without a row.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from pebench import fsio
from pebench.budget_types import Budget, VideoProtocol
from pebench.datasets.spec import TaskSpec
from pebench.record import RunRecord
from pebench.run import ERROR_CHARS, RunOptions, RunSpec, classify, error_text
from pebench.store import RunStore

#: environment variable: seconds before a collective (or the rendezvous) gives up
TIMEOUT_ENV = "PEBENCH_DDP_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 600.0
#: how long a failed rank waits for rank 0 to record its error before exiting
ACK_WAIT_S = 60.0
#: how often rank 0 looks for errors reported by other ranks
POLL_S = 0.2
_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


# ------------------------------------------------------------------------------- spec JSON --
def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples a :class:`RunSpec` holds (recursively)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def spec_to_json(spec: RunSpec) -> str:
    """``spec`` as a JSON object with one key per :class:`RunSpec` field (nested values).

    Raises:
        ValueError: a task whose loader is a function (a DDP rank imports it by its name).
    """
    if spec.task is not None and not isinstance(spec.task.loader, str):
        raise ValueError(
            f"task {spec.task.name!r}: a DDP run needs a loader named 'module:attribute', not a "
            "function object"
        )
    return json.dumps(dataclasses.asdict(spec), sort_keys=True)


def _fields(cls: type, data: Any, what: str) -> dict[str, Any]:
    """``data`` checked against the fields of dataclass ``cls`` (unknown and missing keys named)."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if unknown := sorted(set(data) - set(fields)):
        raise ValueError(f"{what} has unknown keys {unknown}; allowed: {sorted(fields)}")
    required = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing := [k for k in required if k not in data]:
        raise ValueError(f"{what} lacks required keys {missing}")
    return dict(data)


def spec_from_json(text: str) -> RunSpec:
    """The :class:`RunSpec` that :func:`spec_to_json` wrote.

    Raises:
        ValueError: not a JSON object, unknown keys, or missing required fields (all named).
    """
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"run spec is not valid JSON: {err}") from None
    data = _fields(RunSpec, data, "run spec")
    if "overrides" in data:
        data["overrides"] = _tuples(data["overrides"])
    if data.get("budget") is not None:
        budget = _fields(Budget, data["budget"], "run spec budget")
        for key in ("lr_grid", "wd_grid", "seeds"):
            budget[key] = _tuples(budget[key])
        if budget.get("video") is not None:
            budget["video"] = VideoProtocol(**_fields(VideoProtocol, budget["video"], "video"))
        data["budget"] = Budget(**budget)
    if data.get("task") is not None:
        task = _fields(TaskSpec, data["task"], "run spec task")
        for key in ("aliases", "extra_formats"):
            task[key] = _tuples(task.get(key, ()))
        data["task"] = TaskSpec(**task)
    if "options" in data:
        opts = _fields(RunOptions, data["options"], "run spec options")
        for key in ("env", "trackers"):  # the tuple-valued options
            opts[key] = _tuples(opts.get(key, ()))
        data["options"] = RunOptions(**opts)
    return RunSpec(**data)


def write_spec(spec: RunSpec, path: str | Path) -> Path:
    """Write ``spec`` as JSON to ``path`` atomically; returns the path."""
    path = Path(path)
    fsio.atomic_write_text(path, spec_to_json(spec), durable=False)
    return path


def read_spec(path: str | Path) -> RunSpec:
    """The :class:`RunSpec` in the JSON file ``path`` (see :func:`spec_from_json`)."""
    try:
        return spec_from_json(Path(path).read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def launch_command(spec_path: str | Path, results_dir: str | Path, nproc: int) -> list[str]:
    """The ``torchrun`` command that executes the run in ``spec_path`` on ``nproc`` processes.

    Raises:
        ValueError: ``nproc`` is not a positive integer.
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a positive integer, got {nproc!r}")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "pebench.sweep.ddp",
        str(spec_path),
        str(results_dir),
    ]


# ---------------------------------------------------------------------------- no orphans --
#: ``prctl`` option: the signal the kernel sends this process when its parent dies (Linux)
_PR_SET_PDEATHSIG = 1
#: environment variable: pid of the guarded ``torchrun`` agent, the parent every rank expects
AGENT_ENV = "PEBENCH_DDP_AGENT_PID"


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent (pid ``parent``) dies.

    Linux ``PR_SET_PDEATHSIG`` (kept across ``exec``); if the parent is already gone, exit now.
    Elsewhere nothing is set (the worker's own timeout kill still ends the process group).
    """
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(70)


def guarded(cmd: list[str]) -> list[str]:
    """``cmd`` started so that it dies with the process that starts it (see :func:`main`).

    A DDP run's ``torchrun`` gets its own session (a timeout kills the whole group), so it would
    not die with its worker: killed by a scheduler, the worker would leave a run writing its row
    while a resumed sweep runs it again. Chained: worker → ``torchrun`` → ranks, each
    SIGKILLed by the kernel when its parent dies.
    """
    return [sys.executable, "-m", "pebench.sweep.ddp", "--guard", str(os.getpid()), "--", *cmd]


# --------------------------------------------------------------------------------- failures --
def _error_text(err: BaseException, rank: int) -> str:
    return error_text(err, prefix=f"rank {rank}: ")


class _RowOnce:
    """Rank 0's single row: the first of main thread and watcher to write it wins."""

    def __init__(self, results_dir: str, spec: RunSpec) -> None:
        self.runs, self.spec = RunStore(results_dir), spec
        self.lock = threading.Lock()
        self.written = False

    def write(self, row: dict[str, Any], record: RunRecord | None = None) -> bool:
        with self.lock:
            if self.written:
                return False
            self.runs.record(row, record)
            self.written = True
            return True

    def failure(self, status: str, error: str) -> bool:
        return self.write(dict(self.spec.base_row, status=status, error=error[:ERROR_CHARS]))


def _peer_reports(store: Any, size: int) -> list[dict[str, Any]]:
    """Errors other ranks put in the store, in rank order."""
    out = []
    for r in range(1, size):
        if store.check([f"failed/{r}"]):
            out.append(json.loads(store.get(f"failed/{r}").decode()))
    return out


def _watch_peers(store: Any, size: int, row: _RowOnce) -> None:
    """Rank 0: write the first error another rank reports, then end this process.

    Rank 0 may be blocked in a collective that the failed rank will never join.
    """
    while not row.written:
        if int(store.add("failures", 0)) > 0:
            first = _peer_reports(store, size)[0]
            if row.failure(first["status"], first["error"]):
                store.set("ack", "1")
                sys.stderr.write(f"pebench.sweep.ddp: {first['error']}\n")
                sys.stderr.flush()
                os._exit(1)
            return
        time.sleep(POLL_S)


# -------------------------------------------------------------------------------------- main --
def _device_for(spec: RunSpec, local_rank: int) -> str:
    """The device of this rank: ``cuda:LOCAL_RANK`` unless the spec asks for the CPU."""
    import torch

    device = spec.options.device
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return "cpu"
    torch.cuda.set_device(local_rank)
    return f"cuda:{local_rank}"


def _run(spec: RunSpec, results_dir: str, rank: int, size: int, local_rank: int) -> int:
    import torch.distributed as dist

    from pebench.run import execute

    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    row = _RowOnce(results_dir, spec)
    store = None
    try:
        device = _device_for(spec, local_rank)
        spec = dataclasses.replace(spec, options=dataclasses.replace(spec.options, device=device))
        backend = "gloo" if device == "cpu" else "nccl"
        dist.init_process_group(backend, rank=rank, world_size=size, timeout=timeout)
        addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        store = dist.PrefixStore(
            "pebench/ddp/", dist.TCPStore(addr, port, is_master=False, timeout=timeout)
        )
        if rank == 0:
            args = (store, size, row)
            threading.Thread(target=_watch_peers, args=args, daemon=True).start()
        result, record = execute(spec, results_dir)
        if rank == 0:
            result["device"] = f"ddp {size}x {result['device']}"
            row.write(result, record)
    except BaseException as err:  # recorded by rank 0 (its own or, via the store, another's)
        error = _error_text(err, rank)
        if rank == 0:
            peers = _peer_reports(store, size) if store is not None else []
            error += "".join(f"\n{p['error']}" for p in peers)
            row.failure(classify(err), error)
            if store is not None:
                store.set("ack", "1")
        elif store is not None:
            store.set(f"failed/{rank}", json.dumps({"status": classify(err), "error": error}))
            store.add("failures", 1)
            try:
                store.wait(["ack"], timedelta(seconds=ACK_WAIT_S))
            except Exception:
                pass
        sys.stderr.write(error + "\n")
        return 1
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m pebench.sweep.ddp SPEC_JSON RESULTS_DIR`` under ``torchrun``: the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--guard"] and len(args) > 3 and args[2] == "--":
        die_with_parent(int(args[1]))
        os.environ[AGENT_ENV] = str(os.getpid())  # torchrun keeps this pid: the ranks' parent
        os.execv(args[3], args[3:])  # torchrun: keeps the parent-death signal across exec
    if len(args) != 2:
        sys.stderr.write(
            "usage: python -m pebench.sweep.ddp SPEC_JSON RESULTS_DIR (under torchrun)\n"
        )
        return 2
    if missing := [k for k in _TORCHRUN_ENV if k not in os.environ]:
        sys.stderr.write(
            f"pebench.sweep.ddp: environment lacks {missing}; start it with torchrun "
            "(pebench.sweep.ddp.launch_command)\n"
        )
        return 2
    # this rank dies with its torchrun (and exits now if torchrun died while it started up)
    die_with_parent(int(os.environ.get(AGENT_ENV, os.getppid())))
    spec = read_spec(args[0])
    os.environ.update(
        dict(spec.options.env)
    )  # e.g. CUDA_VISIBLE_DEVICES, before CUDA is initialised
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return _run(spec, args[1], rank, size, int(os.environ["LOCAL_RANK"]))


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_ENV",
    "die_with_parent",
    "guarded",
    "launch_command",
    "main",
    "read_spec",
    "spec_from_json",
    "spec_to_json",
    "write_spec",
]

if __name__ == "__main__":
    sys.exit(main())
