"""One run, supervised: what is counted is what is evaluated, and it is scored where no plugin runs.

The supervisor is the run's own process (a fresh forkserver child, :mod:`pebench.sweep.worker`);
it never imports a method plugin. It

1. loads the split the run is scored on, keeps its labels, and blinds a copy
   (:func:`pebench.data.blind`);
2. runs the **training stage** (:mod:`pebench.trainer`, a fresh process, or ``torchrun`` for
   DDP), logging its epoch records as they come, and receives the tunable state (safetensors);
3. counts that state: the head's names and shapes come from the backbone built here on the
   ``meta`` device (no weights, no plugin), everything else in the state is the method's; the
   counts training reported must agree, or the run fails naming both;
4. runs the **prediction stage** (:mod:`pebench.predictor`, a fresh process) on exactly that
   state and the blind split, and scores the predictions against the labels it kept.

So hidden tensors, a patched counter, optimizer or guard, a backbone unfrozen and restored, and
a label read from a frame gain nothing: accuracy is that of the declared state, and the count
is that state's size. What a stage measures about itself (time, memory, loss) is reported as is.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from pebench import predictor, trainer
from pebench import record as REC
from pebench.data import Split
from pebench.method import ContractError
from pebench.run import RunSpec, StageError
from pebench.runlog import EpochRecord
from pebench.scored import blind_eval_split
from pebench.stage import run_stage

#: what the training stage may report, with the type each value must have (it runs plugin code)
TRAINED = {
    "device": str,
    "flops_per_image": float,
    "train_flops_per_image": float,
    "train_data_hash": str,
    "train_data_skipped": int,
    "params_method": int,
    "params_head": int,
    "params_backbone": int,
    "params_inference_extra": int,
    "train_loss": float,
    "train_time_s": float,
    "data_time_s": float,
    "train_images_per_s": float,
    "train_images_per_s_steady": float,
    "first_epoch_s": float,
    "mfu": float,
    "train_resident": bool,
    "peak_mem_bytes": float,
    "peak_mem_kind": str,
}
_EPOCH_TYPES = {
    "epoch": int,
    "train_loss": float,
    "lr": float,
    "epoch_time_s": float,
    "data_time_s": float,
}


def _typed(value: Any, kind: type, what: str) -> Any:
    """``value`` as ``kind`` if it is one (ints pass as floats), else a :class:`StageError`."""
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise StageError("failed", f"training process reported {what}={value!r}: not a {kind}")
    return value


def trained_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The training stage's report, checked: exactly :data:`TRAINED`, each of its type."""
    if set(body) != set(TRAINED):
        odd = sorted(set(body) ^ set(TRAINED))
        raise StageError("failed", f"training process reported unexpected fields {odd[:5]}")
    return {k: _typed(body[k], kind, k) for k, kind in TRAINED.items()}


def epoch_record(body: dict[str, Any]) -> EpochRecord:
    """An epoch record the training stage sent, checked."""
    vals = {k: _typed(body.get(k), kind, f"epoch.{k}") for k, kind in _EPOCH_TYPES.items()}
    return EpochRecord(**vals)


@dataclass(frozen=True)
class StateCount:
    """What a tunable state holds: its parameters split into method and head, and its size."""

    method: int
    head: int
    nbytes: int


def count_state(state: bytes, heads: dict[str, tuple], method: str) -> StateCount:
    """Count a safetensors tunable state: the head (``heads``, exactly) and the method's rest.

    Raises:
        ContractError: the state is unreadable or lacks the head, or its head has other shapes.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(state)
    except (SafetensorError, ValueError) as err:
        raise ContractError(f"method {method!r}: unreadable tunable state ({err})") from None
    got = {n: tuple(t.shape) for n, t in tensors.items() if n in heads}
    if got != heads:
        raise ContractError(
            f"method {method!r}: the tunable state's head is {got}, the model's is {heads}"
        )
    sizes = {n: int(np.prod(t.shape, dtype=np.int64)) for n, t in tensors.items()}
    head = sum(sizes[n] for n in heads)
    return StateCount(sum(sizes.values()) - head, head, len(state))


def check_counts(reported: dict[str, Any], counted: StateCount, method: str) -> None:
    """The counts training reported must be those of the state it sent.

    Raises:
        ContractError: naming both.
    """
    mine = {"params_method": counted.method, "params_head": counted.head}
    theirs = {k: reported[k] for k in mine}
    if theirs != mine:
        raise ContractError(
            f"method {method!r} reported {theirs}, but the tunable state it trained holds {mine}"
        )


def predictions(block: bytes | None, n: int, num_classes: int) -> np.ndarray:
    """The prediction stage's block as ``n`` classes in ``0 .. num_classes - 1``.

    Raises:
        StageError: any other shape or value.
    """
    if block is None or len(block) != 8 * n:
        got = "nothing" if block is None else f"{len(block) // 8} values"
        raise StageError("failed", f"prediction process sent {got} for {n} examples")
    pred = np.frombuffer(block, dtype="<i8").astype(np.int64)
    if n and (pred.min() < 0 or pred.max() >= num_classes):
        raise StageError("failed", f"prediction process sent classes outside 0..{num_classes - 1}")
    return pred


def _train(
    spec: RunSpec, blind_val: Split | None, on_epoch: Any, store: Any
) -> tuple[dict[str, Any], bytes]:
    """The training stage in its own process (or under ``torchrun``): its report and state."""

    def on_message(kind: str, body: dict[str, Any], block: bytes | None) -> None:
        if kind == "epoch":
            on_epoch(body, block)

    if spec.options.nproc > 1:
        from pebench.sweep.ddp import train_ddp

        body, state = train_ddp(spec, store, on_message)  # ranks blind their own split
    else:
        env = dict(spec.options.env)
        body, state = run_stage("training", trainer.stage, (spec, blind_val), on_message, env)
    if state is None:
        raise StageError("failed", "training process sent no tunable state")
    return trained_fields(body), state


def supervise(spec: RunSpec, log: Any = None, store: Any = None) -> tuple[dict[str, Any], Any]:
    """Run ``spec`` as training and prediction stages; its complete row and its record."""
    from pebench.metrics import provenance

    t_start = time.perf_counter()
    opts = spec.options
    task = spec.resolved()[1]
    ev, blind_ev, ev_skipped, meta, heads = blind_eval_split(spec)
    labels = ev.labels.numpy().copy()
    epochs: list[dict[str, Any]] = []

    def on_epoch(body: dict[str, Any], block: bytes | None) -> None:
        rec = epoch_record(body)
        if block is not None:
            pred = predictions(block, len(labels), task.num_classes)
            rec.val_top1 = float((pred == labels).mean()) if len(labels) else math.nan
        epochs.append(asdict(rec))
        if log is not None:
            log.epoch(rec)

    epoch_val = opts.epoch_val and spec.phase == "search"
    trained, state = _train(spec, blind_ev if epoch_val else None, on_epoch, store)
    counted = count_state(state, heads, spec.method)
    check_counts(trained, counted, spec.method)
    env = dict(opts.env)
    done, block = run_stage("prediction", predictor.stage, (spec, state, blind_ev), None, env)
    pred = predictions(block, len(labels), task.num_classes)
    record = REC.make(spec.run_id, spec.phase, pred, pred == labels, epochs)
    row = dict(spec.base_row)
    row.update(provenance(torch.device("cpu")))
    on_device = ["train"] if trained.pop("train_resident") else []
    on_device += ["eval"] if done.get("resident") is True else []
    row.update(
        {k: v for k, v in trained.items() if not k.startswith("train_data")},
        params_backbone=sum(p.numel() for n, p in meta.model.named_parameters() if n not in heads),
        data_hash=f"{trained['train_data_hash']}+{ev.sha256}",
        data_skipped=trained["train_data_skipped"] + ev_skipped,
        data_resident=",".join(on_device) or "none",
        device_runs=opts.device_runs,
        compile="torch.compile" if opts.compile else "",
        eval_images_per_s=_typed(done.get("images_per_s"), float, "images_per_s"),
        checkpoint_bytes=float(counted.nbytes),
        wall_time_s=time.perf_counter() - t_start,
        status="ok",
        error="",
        **record.counts(),
    )
    score = record.n_correct / record.n if record.n else math.nan
    row["val_top1" if spec.phase == "search" else "test_top1"] = score
    if spec.options.nproc > 1:
        row["device"] = f"ddp {spec.options.nproc}x {row['device']}"
    if opts.keep_state and store is not None:
        store.keep_state(spec.run_id, state)
    return row, record


def execute(spec: RunSpec, results_dir: Any = None) -> tuple[dict[str, Any], Any]:
    """Run one training + evaluation, supervised from this process: its row and its record.

    Training and prediction run in processes of their own and this one scores what the
    prediction stage returns (see :mod:`pebench.supervise`: what is evaluated is exactly the
    tunable state that is counted). The record (:class:`pebench.record.RunRecord`) holds the
    per-image predictions of the split the run scored and the per-epoch values; the caller
    writes both as one unit (:meth:`pebench.store.RunStore.record`). With ``results_dir`` (a
    folder or a :class:`pebench.store.RunStore`) the run also writes its log and epoch records
    there (:class:`pebench.runlog.RunLog`) and the row names the log.
    """
    from pebench.runlog import RunLog
    from pebench.store import as_store

    log, store = None, None
    if results_dir is not None:
        store = as_store(results_dir)
        log = RunLog(store.log_paths(spec.run_id), spec.base_row, spec.options.trackers)
    try:
        row, record = supervise(spec, log, store)
    except BaseException as err:
        if log is not None:
            log.close(error=f"{type(err).__name__}: {err}")
        raise
    if log is not None:
        log.close(row)
        row["log_path"] = row.get("log_path") or str(log.path)
    return row, record


__all__ = [
    "TRAINED",
    "StateCount",
    "check_counts",
    "count_state",
    "epoch_record",
    "execute",
    "predictions",
    "supervise",
    "trained_fields",
]
