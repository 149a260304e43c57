"""What a run reports while it trains: a log file, per-epoch records, optional trackers.

Every run executed with a results folder writes, where :meth:`pebench.store.RunStore.log_paths`
puts them (``<results>/logs/``):

- ``<run_id>.log``: a text log: what runs, one line per epoch, the outcome;
- ``<run_id>.epochs.csv``: one record per epoch (train loss, learning rate, epoch and data
  seconds; validation accuracy in search runs when ``--epoch-val`` asks for it: the test split is
  never scored before the end). The same records go into the run's committed record
  (:mod:`pebench.record`); the logs are local.

``--log-to tensorboard`` and ``--log-to wandb`` send the same records to TensorBoard and to
Weights & Biases in offline mode (``wandb sync`` uploads later), through their own libraries;
both are off by default. None of this changes what a run computes.
"""

from __future__ import annotations

import csv
import os
import sys
import time
import types
from dataclasses import asdict, dataclass
from typing import Any

from pebench.errors import PebenchError
from pebench.fsio import fresh_dir, open_new
from pebench.store import LogPaths

#: trackers ``--log-to`` accepts
TRACKERS = ("tensorboard", "wandb")


@dataclass
class EpochRecord:
    """One epoch of one run."""

    epoch: int
    train_loss: float
    #: learning rate of the epoch's first step
    lr: float
    epoch_time_s: float
    data_time_s: float
    val_top1: float | None = None


def summary_writer() -> type:
    """The ``SummaryWriter`` of torch, writing through TensorBoard, never through TensorFlow.

    ``torch.utils.tensorboard`` reaches TensorFlow through ``tensorboard.compat.tf``, which
    imports TensorFlow whenever it is installed (the ``tfds`` extra installs it) unless the
    module ``tensorboard.compat.notf`` exists: TensorBoard's own switch to its TF-free stub. The
    event files are the same; the import costs about 1 s instead of 7 (TensorFlow), in every
    run process that logs to TensorBoard.
    """
    name = "tensorboard.compat.notf"
    sys.modules.setdefault(name, types.ModuleType(name))
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter


def check_trackers(names: tuple[str, ...]) -> None:
    """Refuse unknown trackers and trackers whose library is missing (before anything runs).

    Raises:
        PebenchError: naming the tracker and what is allowed, or the package to install.
    """
    for name in names:
        if name not in TRACKERS:
            raise PebenchError(f"--log-to {name!r} unknown; allowed: {', '.join(TRACKERS)}")
        try:  # each tracker is the package of its name
            summary_writer() if name == "tensorboard" else __import__(name)
        except ImportError as err:
            raise PebenchError(
                f"--log-to {name} needs the {name!r} package ({err}); "
                f"install it with: pip install 'pebench[logging]'"
            ) from err


class RunLog:
    """The log file, the epoch records and the trackers of one run.

    Args:
        paths: where the run's log, epoch records and trackers go.
        row: the run's base row (``run_id``, method, task, phase, lr, seed ...).
        trackers: names from :data:`TRACKERS`.
    """

    def __init__(self, paths: LogPaths, row: dict[str, Any], trackers=()) -> None:
        rid = row["run_id"]
        self.path, self.epochs_path = paths.log, paths.epochs
        # new files, never through a link planted in a shared results folder (run ids are public)
        self._log = open_new(self.path)
        self._csv = open_new(self.epochs_path)
        self._writer: csv.DictWriter | None = None
        self._tb, self._wandb = None, None
        if "tensorboard" in trackers:
            self._tb = summary_writer()(str(fresh_dir(paths.tensorboard)))
        if "wandb" in trackers:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self._wandb = wandb.init(
                mode="offline",
                dir=str(fresh_dir(paths.wandb).parent),
                project="pebench",
                name=rid,
                config={k: v for k, v in row.items() if isinstance(v, (str, int, float))},
                reinit="finish_previous",
            )
        self.line(
            f"run {rid}: {row.get('method')} on {row.get('task')}, {row.get('phase')} "
            f"trial {row.get('trial')} lr={row.get('lr')} wd={row.get('weight_decay')} "
            f"seed={row.get('seed')} budget={row.get('budget')}"
        )

    def line(self, text: str) -> None:
        """Append one timestamped line to the log file."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        self._log.write(f"{stamp} {text}\n")
        self._log.flush()

    def epoch(self, rec: EpochRecord) -> None:
        """Record one epoch everywhere."""
        data = asdict(rec)
        if self._writer is None:
            self._writer = csv.DictWriter(self._csv, fieldnames=list(data))
            self._writer.writeheader()
        self._writer.writerow({k: "" if v is None else v for k, v in data.items()})
        self._csv.flush()
        val = "" if rec.val_top1 is None else f" val_top1={rec.val_top1:.4f}"
        self.line(
            f"epoch {rec.epoch}: train_loss={rec.train_loss:.4f} lr={rec.lr:.3g} "
            f"{rec.epoch_time_s:.2f} s (data {rec.data_time_s:.2f} s){val}"
        )
        scalars = {k: v for k, v in data.items() if k != "epoch" and v is not None}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, rec.epoch)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=rec.epoch)

    def close(self, row: dict[str, Any] | None = None, error: str = "") -> None:
        """Write the outcome and close every sink."""
        if row is not None:
            score = row.get("val_top1") if row.get("phase") == "search" else row.get("test_top1")
            self.line(f"done: {row.get('status')} score={score}")
        elif error:
            self.line(f"ended: {error.splitlines()[0] if error else ''}")
        self._csv.close()
        for name, sink in (("tensorboard", self._tb), ("wandb", self._wandb)):
            if sink is None:
                continue
            try:  # a tracker that fails to close never fails the run it logged
                sink.close() if name == "tensorboard" else sink.finish()
            except Exception as err:
                self.line(f"{name}: could not close: {type(err).__name__}: {err}")
        self._log.close()


__all__ = ["TRACKERS", "EpochRecord", "RunLog", "check_trackers"]
