"""The training stage of one run on several processes with torch DDP (``torchrun``'s entry point).

The run's supervisor (:mod:`pebench.supervise`) calls :func:`train_ddp`, which runs
``python -m torch.distributed.run --standalone --nproc-per-node N -m pebench.sweep.ddp SPEC OUT``
(see :func:`launch_command`): ``N`` ranks that each read the same :class:`RunSpec` (JSON, see
:func:`write_spec`), join one process group (``nccl`` on CUDA, one GPU per ``LOCAL_RANK``;
``gloo`` on CPU) and call :func:`pebench.trainer.train_model`; :mod:`pebench.train` sees the
group and trains with ``DistributedDataParallel`` on the same global batches as a single process.
Only rank 0 reports: the trained report and the tunable state, as files in ``OUT``. The
prediction stage and the scoring happen after, as for any run (one process); the row's
``device`` says ``ddp Nx ...``.

Failures: a rank that raises reports its error in the rendezvous store and waits (briefly) for
rank 0, whose watcher thread reports the ``failed``/``oom``/``diverged`` outcome naming that rank
and ends rank 0, which may be blocked in a collective. Collectives time out after
``PEBENCH_DDP_TIMEOUT_S`` seconds (default :data:`DEFAULT_TIMEOUT_S`), so a hung rank fails the
others instead of hanging them. A rank killed outright (SIGKILL) reports nothing: ``torchrun``
then stops the others and the supervisor records a run without a result.
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

import numpy as np

from pebench import fsio
from pebench.budget_types import Budget, VideoProtocol
from pebench.datasets.spec import TaskSpec
from pebench.run import ERROR_CHARS, RunOptions, RunSpec, StageError, classify, error_text

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


def launch_command(spec_path: str | Path, out_dir: str | Path, nproc: int) -> list[str]:
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
        str(out_dir),
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


# --------------------------------------------------------------------------------- outcome --
#: what rank 0 leaves in the run's folder: the trained report (JSON) and the tunable state
TRAINED_FILE, STATE_FILE, FAILED_FILE = "trained.json", "state.safetensors", "failed.json"
#: largest trained report the supervisor reads (epoch records with validation predictions)
MAX_REPORT = 1 << 26


def _error_text(err: BaseException, rank: int) -> str:
    return error_text(err, prefix=f"rank {rank}: ")


class _Outcome:
    """Rank 0's single outcome in ``out``: the first of main thread and watcher to write it wins."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.lock = threading.Lock()
        self.written = False

    def _once(self, files: dict[str, bytes]) -> bool:
        with self.lock:
            if self.written:
                return False
            for name, data in files.items():  # the JSON last: its presence means complete
                fsio.atomic_write_bytes(self.out / name, data, durable=False)
            self.written = True
            return True

    def trained(self, row: dict[str, Any], epochs: list[dict[str, Any]], state: bytes) -> bool:
        report = json.dumps({"row": row, "epochs": epochs}).encode()
        return self._once({STATE_FILE: state, TRAINED_FILE: report})

    def failure(self, status: str, error: str) -> bool:
        report = json.dumps({"status": status, "error": error[:ERROR_CHARS]}).encode()
        return self._once({FAILED_FILE: report})


def _peer_reports(store: Any, size: int) -> list[dict[str, Any]]:
    """Errors other ranks put in the store, in rank order."""
    out = []
    for r in range(1, size):
        if store.check([f"failed/{r}"]):
            out.append(json.loads(store.get(f"failed/{r}").decode()))
    return out


def _watch_peers(store: Any, size: int, outcome: _Outcome) -> None:
    """Rank 0: report the first error another rank reports, then end this process.

    Rank 0 may be blocked in a collective that the failed rank will never join.
    """
    while not outcome.written:
        if int(store.add("failures", 0)) > 0:
            first = _peer_reports(store, size)[0]
            if outcome.failure(first["status"], first["error"]):
                store.set("ack", "1")
                sys.stderr.write(f"pebench.sweep.ddp: {first['error']}\n")
                sys.stderr.flush()
                os._exit(1)
            return
        time.sleep(POLL_S)


def _read_outcome(out: Path, code: int | None) -> tuple[dict[str, Any], bytes, list[Any]]:
    """What rank 0 left in ``out`` (it runs plugin code: JSON and safetensors bytes only).

    Raises:
        StageError: the run failed (the status and error rank 0 reported), or left nothing.
    """

    def report(name: str) -> Any:
        path = out / name
        if not path.is_file() or path.stat().st_size > MAX_REPORT:
            return None
        try:
            return json.loads(path.read_bytes())
        except ValueError:
            return None

    failed = report(FAILED_FILE)
    if isinstance(failed, dict):
        raise StageError(str(failed.get("status", "failed")), str(failed.get("error", "")))
    trained = report(TRAINED_FILE)
    if not isinstance(trained, dict) or not (out / STATE_FILE).is_file():
        raise StageError("failed", f"torchrun exited with code {code} without a result")
    row, epochs = trained.get("row"), trained.get("epochs")
    if not isinstance(row, dict) or not isinstance(epochs, list):
        raise StageError("failed", "rank 0 left a malformed trained report")
    return row, (out / STATE_FILE).read_bytes(), epochs


def train_ddp(spec: RunSpec, store: Any, on_message: Any) -> tuple[dict[str, Any], bytes]:
    """The training stage of a DDP run: ``torchrun`` with ``spec.options.nproc`` ranks.

    Called by the run's supervisor (:mod:`pebench.supervise`), which it leaves only the trained
    report, the epoch records (given to ``on_message`` after the run) and the tunable state, all
    through files in a folder of the run (:meth:`pebench.store.RunStore.ddp_dir`; a temporary
    one without a store) that is removed afterwards. ``torchrun`` gets its own session and dies
    with the supervisor (:func:`guarded`), which dies with its worker.

    Raises:
        StageError: as :func:`_read_outcome`.
    """
    import shutil
    import subprocess
    import tempfile

    out = (
        Path(tempfile.mkdtemp(prefix="pebench-ddp-"))
        if store is None
        else fsio.fresh_dir(store.ddp_dir(spec.run_id))
    )
    try:
        spec_path = write_spec(spec, out / "spec.json")
        cmd = guarded(launch_command(spec_path, out, spec.options.nproc))
        env = {**os.environ, **dict(spec.options.env)}
        code = subprocess.run(cmd, env=env, start_new_session=True).returncode
        row, state, epochs = _read_outcome(out, code)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    for epoch in epochs:
        if not isinstance(epoch, dict) or not isinstance(epoch.get("record"), dict):
            continue
        pred = epoch.get("pred")
        block = None
        if isinstance(pred, list) and all(type(p) is int for p in pred):
            block = np.asarray(pred, dtype="<i8").tobytes()
        on_message("epoch", epoch["record"], block)
    return row, state


# -------------------------------------------------------------------------------------- main --
def _device_for(spec: RunSpec, local_rank: int) -> str:
    """The device of this rank: ``cuda:LOCAL_RANK`` unless the spec asks for the CPU."""
    import torch

    device = spec.options.device
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return "cpu"
    torch.cuda.set_device(local_rank)
    return f"cuda:{local_rank}"


def _blind_val(spec: RunSpec) -> Any:
    """``--epoch-val`` on a search run: the validation split without labels, else ``None``."""
    if not (spec.options.epoch_val and spec.phase == "search"):
        return None
    from pebench.scored import blind_eval_split

    return blind_eval_split(spec)[1]


def _run(spec: RunSpec, out: str, rank: int, size: int, local_rank: int) -> int:
    import torch.distributed as dist

    from pebench.trainer import train_model

    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    outcome = _Outcome(out)
    store = None
    epochs: list[dict[str, Any]] = []

    def on_epoch(record: dict[str, Any], pred: Any) -> None:
        epochs.append({"record": record, "pred": None if pred is None else pred.tolist()})

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
            args = (store, size, outcome)
            threading.Thread(target=_watch_peers, args=args, daemon=True).start()
        row, state = train_model(spec, _blind_val(spec), on_epoch)
        if rank == 0:
            outcome.trained(row, epochs, state)
    except BaseException as err:  # reported by rank 0 (its own or, via the store, another's)
        error = _error_text(err, rank)
        if rank == 0:
            peers = _peer_reports(store, size) if store is not None else []
            error += "".join(f"\n{p['error']}" for p in peers)
            outcome.failure(classify(err), error)
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
    """``python -m pebench.sweep.ddp SPEC_JSON OUT_DIR`` under ``torchrun``: the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--guard"] and len(args) > 3 and args[2] == "--":
        die_with_parent(int(args[1]))
        os.environ[AGENT_ENV] = str(os.getpid())  # torchrun keeps this pid: the ranks' parent
        os.execv(args[3], args[3:])  # torchrun: keeps the parent-death signal across exec
    if len(args) != 2:
        sys.stderr.write("usage: python -m pebench.sweep.ddp SPEC_JSON OUT_DIR (under torchrun)\n")
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
    "train_ddp",
    "read_spec",
    "spec_from_json",
    "spec_to_json",
    "write_spec",
]

if __name__ == "__main__":
    sys.exit(main())
