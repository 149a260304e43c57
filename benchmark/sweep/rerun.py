"""What a sweep finds already recorded, and ``--rerun``: set those rows aside, never delete them.

A rerun of the same command reuses every row with a final status (that is what makes a killed
sweep resumable); :func:`announce` says so in one line instead of finishing silently. With
``--rerun`` the grid's rows are set aside first (:meth:`pebench.store.RunStore.begin_rerun`: the
leaderboard never reads them; nothing is lost), so every run of the grid executes again.

A ``--rerun`` is journalled until its grid ran to the end (:func:`finish`). Interrupted (Ctrl-C,
or a kill, even during the moves), it is resumed by the next run of the grid, with or without
``--rerun``: rows older than its start are set aside, its fresh rows are kept and reused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pebench.store import RunStore
    from pebench.sweep.plan import Sweep


def _grids(sweeps: list[Sweep]) -> dict[RunStore, list[str]]:
    """Each results folder's run ids of the sweeps' grids."""
    out: dict[RunStore, list[str]] = {}
    for sw in sweeps:
        for task in sw.tasks:
            out.setdefault(sw.store, []).extend(sw.grid_ids(task))
    return out


def recorded(sweeps: list[Sweep]) -> list[tuple[RunStore, str]]:
    """``(store, run id)`` of every recorded run of the sweeps' grids (each once)."""
    return [(store, rid) for store, rids in _grids(sweeps).items() for rid in store.recorded(rids)]


def grid_size(sweeps: list[Sweep]) -> int:
    """Runs of the grids: each trial's replicates and one final per seed, per method and task."""
    return sum(
        len(sw.budget.trials()) * sw.budget.search_replicates + len(sw.seeds)
        for sw in sweeps
        for _ in sw.tasks
    )


def _resume(sweeps: list[Sweep]) -> str | None:
    """Resume the unfinished ``--rerun`` of these grids, if any; the line to print."""
    lines = []
    for store, rids in _grids(sweeps).items():
        if (pending := store.pending_rerun(rids)) is None:
            continue
        folder, started = pending
        moved = store.resume_rerun(folder, started, rids)
        fresh = len(store.recorded(rids))
        lines.append(
            f"pebench run: resuming the unfinished --rerun of {folder.name}: its {fresh} fresh "
            f"rows are kept"
            + (f", {len(moved)} older rows moved to {folder}" if moved else "")
            + "; the other runs execute"
        )
    return "\n".join(lines) or None


def announce(sweeps: list[Sweep], rerun: bool) -> str | None:
    """Apply ``--rerun`` or describe what will be reused; the line(s) to print (or ``None``)."""
    if (line := _resume(sweeps)) is not None:
        return line  # a --rerun again, or a plain resume: the interrupted rerun continues
    runs = recorded(sweeps)
    done = [(store, rid) for store, rid in runs if store.finished(rid) is not None]
    if rerun and runs:
        moved = []
        for store, rids in _grids(sweeps).items():
            moved += store.begin_rerun(rids)
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


def finish(sweeps: list[Sweep]) -> None:
    """The sweeps ran to the end: their ``--rerun``, if one was journalled, is finished."""
    for store, rids in _grids(sweeps).items():
        while (pending := store.pending_rerun(rids)) is not None:
            store.finish_rerun(pending[0])


__all__ = ["announce", "finish", "grid_size", "recorded"]
