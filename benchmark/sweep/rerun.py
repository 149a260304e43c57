"""What a sweep finds already recorded, and ``--rerun``: set those rows aside, never delete them.

A rerun of the same command reuses every row with a final status (that is what makes a killed
sweep resumable); :func:`announce` says so in one line instead of finishing silently. With
``--rerun`` the grid's rows are moved to ``runs/replaced/<UTC time>/`` first (the leaderboard
never reads them; nothing is lost), so every run of the grid executes again.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pebench import results as R

if TYPE_CHECKING:
    from pebench.sweep.plan import Sweep


def recorded(sweeps: list[Sweep]) -> list[Path]:
    """Row files of the sweeps' grids that exist (each once)."""
    paths = [p for sw in sweeps for task in sw.tasks for p in sw.recorded(task)]
    return list(dict.fromkeys(paths))


def grid_size(sweeps: list[Sweep]) -> int:
    """Runs of the grids: every search trial and one final per seed, per method and task."""
    return sum(len(sw.budget.trials()) + len(sw.seeds) for sw in sweeps for _ in sw.tasks)


def set_aside(paths: list[Path]) -> list[Path]:
    """Move ``paths`` (row files) to ``runs/replaced/<UTC time>/``; returns the new paths."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    moved = []
    for path in paths:
        dest = path.parent / "replaced" / stamp / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
        moved.append(dest)
    return moved


def announce(sweeps: list[Sweep], rerun: bool) -> str | None:
    """Apply ``--rerun`` or describe what will be reused; the one line to print (or ``None``)."""
    paths = recorded(sweeps)
    done = [p for p in paths if R.finished(p.parent.parent, p.stem) is not None]
    if rerun and paths:
        moved = set_aside(paths)
        return (
            f"pebench run: --rerun: {len(moved)} recorded runs of this grid moved to "
            f"{moved[0].parent}; all {grid_size(sweeps)} runs execute again"
        )
    if done:
        where = sorted({str(p.parent) for p in done})
        return (
            f"pebench run: {len(done)} of the grid's {grid_size(sweeps)} runs are already "
            f"recorded in {', '.join(where)} and are reused, not rerun (--rerun runs them again)"
        )
    return None


__all__ = ["announce", "grid_size", "recorded", "set_aside"]
