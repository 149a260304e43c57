"""The training stage of a run: plugin code runs here, and nothing it does here is counted.

It builds the backbone and the method, trains on the run's training split, and sends its
supervisor (:mod:`pebench.supervise`) the epoch records, what training measured, and the
**tunable state**: the trainable tensors (method and head) as safetensors bytes. That state is
all that leaves this process: evaluation happens in a fresh process that loads exactly it
(:mod:`pebench.predictor`), and the counts come from it. Tensors the plugin kept elsewhere, a
backbone it unfroze and restored, a patched counter, optimizer or guard change nothing there.

The :class:`pebench.method.Guard` still checks the contract at the end (a run that broke it
fails naming what it did); it is an early, readable refusal, not what protects the numbers.

Under DDP (:mod:`pebench.sweep.ddp`) every rank runs :func:`train_model`; rank 0 reports.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from pebench.data import Split, place, run_split
from pebench.method import Guard, tunable_state_dict
from pebench.metrics import MemoryMeter, device_name, mfu, step_flops
from pebench.run import RunSpec, build_model, device_of
from pebench.stage import Channel
from pebench.train import evaluate, train, world


def state_bytes(model: torch.nn.Module) -> bytes:
    """The tunable state (method tensors and head) as safetensors bytes, on the host."""
    from safetensors.torch import save

    state = tunable_state_dict(model)
    return save({k: v.detach().to("cpu").contiguous() for k, v in state.items()})


def train_model(
    spec: RunSpec,
    blind_val: Split | None = None,
    on_epoch: Any = None,
) -> tuple[dict[str, Any], bytes]:
    """Train ``spec``'s model in this process: ``(what training measured, tunable state)``.

    ``blind_val`` (``--epoch-val`` on a search run: the validation split without its labels) is
    predicted after every epoch; ``on_epoch(record, predictions)`` receives each epoch's record
    (a dict) and those predictions (``None`` without ``blind_val``).
    """
    opts = spec.options
    device = device_of(opts)
    budget, task = spec.resolved()
    row: dict[str, Any] = {"device": device_name(device)}
    bb = build_model(spec, budget, task.num_classes, row)
    model = bb.model.to(device)
    guard = Guard(model)  # before any forward pass: what prepare fixed, checked after the run
    row["flops_per_image"], row["train_flops_per_image"] = step_flops(model, budget.image_size)
    args = (task, spec.phase, budget, bb.mean, bb.std, opts.data_dir, spec.seed)
    tr, skipped = run_split(*args, train=True)
    row.update(train_data_hash=tr.sha256, train_data_skipped=skipped)
    meter = MemoryMeter(device)
    meter.start()  # from here: what training costs (not the backbone, not the loaded data)
    (resident,) = place([tr], device, opts.device_share)
    preds: list[np.ndarray | None] = []
    epoch_val = None
    if blind_val is not None:

        def epoch_val() -> float:
            preds.append(evaluate(model, blind_val, budget, device, opts.data_workers).pred)
            return math.nan  # scored by the supervisor, which has the labels

    def epoch_done(rec: Any) -> None:
        if on_epoch is not None:
            on_epoch(asdict(rec), preds[-1] if preds else None)

    stats = train(
        model, tr, budget, spec.lr, spec.weight_decay, spec.seed, device,
        progress=opts.progress, desc=f"{spec.method} {task.name} {spec.phase}",
        workers=opts.data_workers, compile=opts.compile, on_epoch=epoch_done,
        epoch_val=epoch_val,
    )  # fmt: skip
    guard.verify(model, spec.method)
    mem, kind = meter.peak()
    mem -= tr.data.nbytes if resident else 0
    steady = stats.steady_images_per_s  # MFU of the steady state (all epochs when only one)
    ips = steady if steady == steady else stats.train_images_per_s
    row.update(
        train_loss=stats.train_loss,
        train_time_s=stats.train_time_s,
        data_time_s=stats.data_time_s,
        train_images_per_s=stats.train_images_per_s,
        train_images_per_s_steady=steady,
        first_epoch_s=stats.first_epoch_s,
        mfu=mfu(row["train_flops_per_image"], ips, row["device"], devices=world()[1]),
        train_resident=bool(resident),
        peak_mem_bytes=mem,
        peak_mem_kind=kind,
    )
    return row, state_bytes(model)


def stage(chan: Channel, spec: RunSpec, blind_val: Split | None) -> None:
    """The training stage's process body (see :func:`pebench.stage.run_stage`)."""

    def on_epoch(record: dict[str, Any], pred: np.ndarray | None) -> None:
        block = None if pred is None else np.ascontiguousarray(pred, dtype="<i8").tobytes()
        chan.send("epoch", record, block)

    row, state = train_model(spec, blind_val, on_epoch)
    chan.send("done", row, state)


__all__ = ["stage", "state_bytes", "train_model"]
