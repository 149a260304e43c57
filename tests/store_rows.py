"""Run rows and records for run-store tests: one valid final row and its prediction record."""

from __future__ import annotations

from typing import Any

from pebench import record as REC
from pebench import results as R

#: the run id of :func:`make_row`'s row unless overridden
RID = "0123456789abcdef"


def make_row(**over: Any) -> dict[str, Any]:
    """A final ``ok`` row of :data:`RID` (every schema column present); ``over`` replaces fields."""
    row = {k: "" for k in R.COLUMNS}
    row.update(
        run_id=RID, phase="final", trial=0, lr=1e-3, weight_decay=1e-4, method="lora",
        preset="default", method_config="{}", method_origin="builtin",
        method_reconstruction=False, backbone="b", weights="w", task="demo/shapes",
        suite="demo", task_version="1", data_format="procedural", budget="demo-v3", seed=0,
        test_top1=0.75, val_top1=float("nan"), status="ok", git_dirty=False,
    )  # fmt: skip
    row.update(over)
    return row


def make_record(
    rid: str = RID, pred: tuple = (0, 1, 2, 1), correct: tuple = (True, True, False, True)
) -> REC.RunRecord:
    """A test-split record of ``rid``: 3 of 4 correct by default (``test_top1=0.75``)."""
    return REC.make(rid, "final", pred, correct, [{"epoch": 0, "train_loss": 1.5, "lr": 0.1}])
