"""Model selection on validation data: which search trial wins, and where it lies in its grid.

One home for the selection rule, shared by the sweep (which trial the finals retrain) and the
leaderboard (which finals still match their search, and how many selections sit on an edge of
the grid). Torch-free: rows are plain dicts (:mod:`pebench.results`).

A selection *on an edge* is a trial whose learning rate (or weight decay) is the smallest or the
largest of its grid, where that grid has more than one value: the optimum may lie beyond it, so
the comparison measures the grid as much as the method.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Row = Mapping[str, Any]

#: search statuses that are final outcomes (a rerun would give the same): the finals may start
SETTLED = ("ok", "diverged")


def select_trial(search_rows: Iterable[Row]) -> Row | None:
    """Best search trial by validation accuracy; ties go to the smaller lr, then smaller wd."""
    ok = [r for r in search_rows if r["status"] == "ok" and not math.isnan(r["val_top1"])]
    if not ok:
        return None
    return min(ok, key=lambda r: (-r["val_top1"], r["lr"], r["weight_decay"]))


def unsettled(search_rows: Iterable[Row]) -> list[Row]:
    """Search trials whose status is not a final outcome (``failed``, ``oom``, ``timeout``)."""
    return [r for r in search_rows if r["status"] not in SETTLED]


def edge(lr: float, wd: float, lr_grid: Sequence[float], wd_grid: Sequence[float]) -> str:
    """Where ``(lr, wd)`` lies in its grid: ``""`` inside, else its edges joined by ``+``.

    Edges are ``lr-low``, ``lr-high``, ``wd-low`` and ``wd-high``; a dimension with one value is
    never an edge.
    """
    out = []
    for name, value, grid in (("lr", lr, lr_grid), ("wd", wd, wd_grid)):
        values = sorted(set(grid))
        if len(values) < 2 or math.isnan(value):
            continue
        if value == values[0]:
            out.append(f"{name}-low")
        elif value == values[-1]:
            out.append(f"{name}-high")
    return "+".join(out)


def grid_text(lr_grid: Sequence[float], wd_grid: Sequence[float]) -> str:
    """The grid a selection was made from, as rows record it: ``lr=1e-3,3e-3 wd=1e-4``."""
    lrs = ",".join(f"{v:g}" for v in sorted(set(lr_grid)))
    wds = ",".join(f"{v:g}" for v in sorted(set(wd_grid)))
    return f"lr={lrs} wd={wds}"


def parse_grid(text: str) -> tuple[list[float], list[float]]:
    """The ``(lr grid, wd grid)`` of :func:`grid_text`'s text (``([], [])`` for ``""``)."""
    parts = dict(p.split("=", 1) for p in text.split() if "=" in p)
    return (
        [float(v) for v in parts.get("lr", "").split(",") if v],
        [float(v) for v in parts.get("wd", "").split(",") if v],
    )


def selection_fields(best: Row, lr_grid: Sequence[float], wd_grid: Sequence[float]) -> dict:
    """What a final row records of its selection: validation score, grid, edge."""
    return {
        "val_top1": best["val_top1"],
        "selection_grid": grid_text(lr_grid, wd_grid),
        "selection_edge": edge(best["lr"], best["weight_decay"], lr_grid, wd_grid),
    }


__all__ = [
    "SETTLED",
    "edge",
    "grid_text",
    "parse_grid",
    "select_trial",
    "selection_fields",
    "unsettled",
]
