"""What a sweep finds already recorded, and ``--rerun``: set those rows aside, never delete them.

A rerun of the same command reuses every row with a final status (that is what makes a killed
sweep resumable); :func:`announce` says so in one line instead of finishing silently. With
``--rerun`` the grid's rows are set aside first (:meth:`pebench.store.RunStore.set_aside`: the
leaderboard never reads them; nothing is lost), so every run of the grid executes again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pebench.store import RunStore
    from pebench.sweep.plan import Sweep


def recorded(sweeps: list[Sweep]) -> list[tuple[RunStore, str]]:
    """``(store, run id)`` of every recorded run of the sweeps' grids (each once)."""
    found = [
        (sw.store, rid)
        for sw in sweeps
        for task in sw.tasks
        for rid in sw.store.recorded(sw.grid_ids(task))
    ]
    return list(dict.fromkeys(found))


def grid_size(sweeps: list[Sweep]) -> int:
    """Runs of the grids: each trial's replicates and one final per seed, per method and task."""
    return sum(
        len(sw.budget.trials()) * sw.budget.search_replicates + len(sw.seeds)
        for sw in sweeps
        for _ in sw.tasks
    )


def announce(sweeps: list[Sweep], rerun: bool) -> str | None:
    """Apply ``--rerun`` or describe what will be reused; the one line to print (or ``None``)."""
    runs = recorded(sweeps)
    done = [(store, rid) for store, rid in runs if store.finished(rid) is not None]
    if rerun and runs:
        moved = []
        for store in dict.fromkeys(store for store, _ in runs):
            moved += store.set_aside(rid for s, rid in runs if s == store)
        return (
            f"pebench run: --rerun: {len(moved)} recorded runs of this grid moved to "
            f"{moved[0].parent}; all {grid_size(sweeps)} runs execute again"
        )
    if done:
        where = sorted({str(store.runs) for store, _ in done})
        return (
            f"pebench run: {len(done)} of the grid's {grid_size(sweeps)} runs are already "
            f"recorded in {', '.join(where)} and are reused, not rerun (--rerun runs them again)"
        )
    return None


__all__ = ["announce", "grid_size", "recorded"]
