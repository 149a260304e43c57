"""Dispatch: hand the runs of planned sweeps to an executor, each (method, task) as a pipeline.

Each (method, task) is a :class:`GridCell`: its search trials are submitted at once (together with
every other task's, so an engine can batch them into one array job), and its finals as soon as all
of *its* search rows are recorded — no global barrier. Runs whose row already has a final status
are not resubmitted (resume), and a run whose live marker names another worker (an earlier
invocation's job still running) is waited for, not duplicated: no two workers ever write the same
row file. What killed workers left (temp files, the marker of a run whose row they wrote) is
removed on resume, and a full results folder stops the dispatch with one
:class:`pebench.store.ResultsFullError` (runs in progress stop without a row; rows already
written are kept).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pebench import fsio
from pebench.results import ResultsError, executions
from pebench.selection import SETTLED, unsettled
from pebench.store import ResultsFullError, RunStore
from pebench.sweep.worker import STOP

if TYPE_CHECKING:  # the planner runs a sweep through this module, so no run-time import back
    from pebench.datasets import TaskSpec
    from pebench.run import RunSpec
    from pebench.sweep.plan import Sweep

Row = dict[str, Any]
Key = tuple[RunStore, str]
#: the error of a placeholder final: its task's search had no ``ok`` trial
NO_TRIAL_OK = "no search trial finished with status ok"
#: executions of one search trial in one dispatch before its task's finals are blocked
TRIAL_ATTEMPTS = 2
#: the error of blocked finals (formatted with the trials that have no final outcome)
BLOCKED = (
    "finals not run on a partial grid: search {trials} ended without a final outcome after "
    "{attempts} attempt(s); rerun the same command to retry"
)


@dataclass
class GridCell:
    """One (method, task) of a dispatch: its search trials, then its finals."""

    sweep: Sweep
    task: TaskSpec
    search: list[RunSpec]
    finals: list[RunSpec] | None = None
    rows: dict[str, Row] = field(default_factory=dict)
    #: run id -> the ``attempt`` its row had when this dispatch began (0: none, or settled)
    base: dict[str, int] = field(default_factory=dict)

    def search_done(self) -> bool:
        """Whether every search trial has a recorded row."""
        return all(s.run_id in self.rows for s in self.search)

    def ordered_rows(self) -> list[Row]:
        """Its rows in grid order: trials, then finals by seed."""
        return [self.rows[s.run_id] for s in self.search + (self.finals or [])]

    def key(self, spec: RunSpec) -> Key:
        """Where ``spec``'s row lives: (its store, run id)."""
        return self.sweep.store, spec.run_id


class Dispatcher:
    """The state of one dispatch: submitted runs, runs another worker holds, who waits for what.

    Args:
        sweeps: the planned sweeps (one per method), all validated.
        executor: a :mod:`pebench.sweep.executors` executor (``submit``, ``wait``, ``result``,
            ``cancel``).
        on_row: called with each row as it is recorded (completion order).
        poll_s: how often runs owned by another worker are checked.
    """

    def __init__(
        self,
        sweeps: list[Sweep],
        executor: Any,
        on_row: Callable[[Row], None] | None = None,
        poll_s: float = 2.0,
    ) -> None:
        self.executor, self.on_row, self.poll_s = executor, on_row, poll_s
        self.cells = [GridCell(s, t, s.search_specs(t)) for s in sweeps for t in s.tasks]
        for cell in self.cells:
            cell.base = {s.run_id: _executions(cell.sweep.store, s.run_id) for s in cell.search}
        self.handles: list[Any] = []  # executor handles, parallel to ``owners``
        self.owners: list[tuple[GridCell, RunSpec]] = []
        self.foreign: list[
            tuple[GridCell, RunSpec]
        ] = []  # runs a live marker of another worker holds
        # run -> the cells waiting for its row: a run two cells share (``--method lora,lora``)
        # is submitted once
        self.waiting: dict[Key, list[GridCell]] = {}
        self.bar: Any = None
        self.started = time.time()

    @property
    def total(self) -> int:
        """Runs of the whole grid (search trials and finals)."""
        return sum(len(c.search) + len(c.sweep.seeds) for c in self.cells)

    # ------------------------------------------------------------------------------- steps --
    def record(self, cell: GridCell, row: Row) -> None:
        """Give ``row`` to every cell waiting for it."""
        for c in self.waiting.pop((cell.sweep.store, row["run_id"]), [cell]):
            c.rows[row["run_id"]] = row
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix_str(
                    f"{row['method']} {row['task']} {row['phase']} {row['status']}"
                )
            if self.on_row:
                self.on_row(row)

    def submit(self, items: list[tuple[GridCell, RunSpec]]) -> None:
        """Hand runs to the executor."""
        if items:
            jobs = [(s, c.sweep.store.root, c.sweep.timeout) for c, s in items]
            self.handles.extend(self.executor.submit(jobs))
            self.owners.extend(items)

    def launch(self, items: list[tuple[GridCell, RunSpec]], again: bool = False) -> None:
        """Record finished runs, wait for runs other workers hold, submit the rest.

        A row another sweep wrote *during* this dispatch is recorded as it is, whatever its
        status (that sweep ran it just now and retries it itself; running it here too would
        repeat the work, hours for a ``timeout``), unless ``again``: this dispatch's own retry.
        """
        todo = []
        for cell, spec in items:
            key = cell.key(spec)
            if key in self.waiting:
                self.waiting[key].append(cell)
                continue
            store, rid = key
            if (done := store.finished(rid)) is not None:
                store.clear_stale(rid)  # a worker killed after writing the row left its marker
                self.record(cell, done)
                continue
            if not again and (fresh := self._fresh_row(key)) is not None:
                self.record(cell, fresh)  # another driver executed it: its retries count here
                continue
            self.waiting[key] = [cell]
            if store.running(rid) is not None:
                self.foreign.append((cell, spec))
            else:
                todo.append((cell, spec))
        self.submit(todo)

    def _fresh_row(self, key: Key) -> Row | None:
        """The row at ``key`` if another worker wrote it since this dispatch started."""
        store, rid = key
        return store.fresh(rid, self.started)

    def advance(self) -> None:
        """Launch the finals of every cell whose search is complete and settled.

        A search trial without a final outcome (``failed``, ``oom``, ``timeout``: a killed or
        crashed run) is run again, up to :data:`TRIAL_ATTEMPTS` executions in this dispatch;
        after that the finals are recorded ``blocked`` instead of running on a partial grid.
        """
        ready, retry = [], []
        for cell in self.cells:
            if cell.finals is not None or not cell.search_done():
                continue
            search_rows = [cell.rows[s.run_id] for s in cell.search]
            if again := self._retry(cell):
                retry.extend((cell, s) for s in again)
                continue
            step, cell.finals = cell.sweep.after_search(cell.task, search_rows)
            if step == "blocked":
                self._block(cell, search_rows)
            elif step == "failed":
                self._placeholders(cell, "failed", NO_TRIAL_OK)
            else:
                ready.extend(self._finals(cell))
        self.launch(retry, again=True)
        self.launch(ready)

    def _retry(self, cell: GridCell) -> list[RunSpec]:
        """The unsettled search trials of ``cell`` that may run once more (forgotten here).

        Executions are counted from the rows (their ``attempt``), not by this driver, so
        drivers sharing a results folder execute a failing trial :data:`TRIAL_ATTEMPTS` times
        in all: a newer row another driver wrote is recorded here instead of retried blindly.
        """
        store, again = cell.sweep.store, []
        for s in cell.search:
            rid = s.run_id
            if cell.rows[rid]["status"] in SETTLED:
                continue
            with contextlib.suppress(ResultsError):
                if (now := store.read(rid)) is not None:
                    cell.rows[rid] = now  # the newest execution, whoever ran it
            if cell.rows[rid]["status"] in SETTLED:
                continue
            if (done := executions(cell.rows[rid])) - cell.base.get(rid, 0) < TRIAL_ATTEMPTS:
                del cell.rows[rid]
                # attempt done + 1: run_one skips it if another driver executed that one already
                again.append(replace(s, base_row=dict(s.base_row, attempt=done + 1)))
        return again

    def _block(self, cell: GridCell, search_rows: list[Row]) -> None:
        """Record the finals of ``cell`` as ``blocked``, naming the unsettled trials."""
        trials = ", ".join(
            f"trial {r['trial']} (lr={r['lr']:g}, wd={r['weight_decay']:g}: {r['status']}, "
            f"{(r['error'].splitlines() or [''])[0][:120]})"
            for r in unsettled(search_rows)
        )
        self._placeholders(cell, "blocked", BLOCKED.format(trials=trials, attempts=TRIAL_ATTEMPTS))

    def _placeholders(self, cell: GridCell, status: str, error: str) -> None:
        """Record the finals of ``cell`` that cannot run (no ``ok`` trial, or blocked).

        An existing row with a final status is kept (a concurrent sweep may have finished it).
        """
        store = cell.sweep.store
        for spec in cell.finals:
            row = store.finished(spec.run_id)
            self.record(cell, row or store.record(dict(spec.base_row, status=status, error=error)))

    def _finals(self, cell: GridCell) -> list[tuple[GridCell, RunSpec]]:
        """The finals of a settled search with a selected trial, to launch.

        When a rerun of the search changed which trial wins, the finals of the old winner no
        longer match the search rows: they are retired to the store's ``stale`` runs (kept,
        never read by the leaderboard), and placeholders of an earlier failed search removed.
        """
        store = cell.sweep.store
        for spec in cell.sweep.placeholders(cell.task):
            store.discard(spec.run_id)
        store.retire(cell.sweep.final_ids(cell.task, but=cell.finals[0].trial))
        return [(cell, s) for s in cell.finals]

    def check_foreign(self) -> None:
        """Take over runs whose other worker is gone; record those it finished."""
        for item in list(self.foreign):
            store, rid = item[0].key(item[1])
            marker = store.marker(rid)
            if store.running(rid) is not None:
                continue
            self.foreign.remove(item)
            if marker is None and (row := store.read(rid)) is not None:  # the other one finished
                self.record(item[0], row)
            else:  # its worker is gone: run it here
                self.submit([item])

    def collect(self) -> None:
        """Wait for submitted runs (or one poll interval) and record what finished."""
        if self.handles:
            timeout = self.poll_s if self.foreign else None
            done = self.executor.wait(self.handles, timeout=timeout)
        else:
            done = []
            time.sleep(self.poll_s)
        for i in sorted(done, reverse=True):
            cell, spec = self.owners.pop(i)
            row = self.executor.result(self.handles.pop(i), spec, cell.sweep.store.root)
            self.record(cell, row)

    # --------------------------------------------------------------------------------- run --
    def run(self, progress: bool = True) -> list[Row]:
        """Run the whole grid; returns every row in grid order."""
        from tqdm.auto import tqdm

        budgets = ",".join(dict.fromkeys(c.sweep.budget.id for c in self.cells))
        self.bar = tqdm(  # a bar only on a terminal: in a log its redraws are noise
            total=self.total,
            desc=f"{self.executor.name} {budgets}",
            disable=not progress or not sys.stderr.isatty(),
        )
        STOP.clear()
        try:
            for store in dict.fromkeys(c.sweep.store for c in self.cells):
                store.tidy()  # what writers killed in an earlier dispatch left
            self.launch([(c, s) for c in self.cells for s in c.search])
            self.advance()
            while self.handles or self.foreign:
                self.collect()
                self.check_foreign()
                self.advance()
        except BaseException as err:
            full = isinstance(err, OSError) and fsio.is_full(err)
            if isinstance(err, KeyboardInterrupt):
                _ignore_interrupts()  # a second Ctrl-C must not break the clean-up
            if full or isinstance(err, KeyboardInterrupt):
                STOP.set()  # running local runs stop without a row, their markers go
            self.executor.cancel(self.handles)  # no orphan job may start a run after this
            if full:
                raise self._full(err) from err
            raise
        finally:
            self.bar.close()
        return [row for cell in self.cells for row in cell.ordered_rows()]

    def _full(self, err: OSError) -> ResultsFullError:
        """The one-line error of a full results folder: which folder, what is recorded."""
        folders = list(dict.fromkeys(c.sweep.results_dir for c in self.cells))
        name = Path(str(err.filename or folders[0])).absolute()
        folder = next((f for f in folders if name.is_relative_to(Path(f).absolute())), folders[0])
        recorded = {(c.sweep.results_dir, rid) for c in self.cells for rid in c.rows}
        return ResultsFullError(folder, err.errno, len(recorded))


def _executions(store: RunStore, rid: str) -> int:
    """:func:`pebench.results.executions` of run ``rid``'s row (0 when unreadable)."""
    try:
        return executions(store.read(rid))
    except ResultsError:
        return 0


def _ignore_interrupts() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def dispatch(
    sweeps: list[Sweep],
    executor: Any,
    on_row: Callable[[Row], None] | None = None,
    poll_s: float = 2.0,
) -> list[Row]:
    """Run the grid of ``sweeps`` on ``executor``; returns every row in grid order.

    See :class:`Dispatcher` for the arguments.
    """
    progress = any(s.options.progress for s in sweeps)
    return Dispatcher(sweeps, executor, on_row, poll_s).run(progress)


__all__ = ["GridCell", "Dispatcher", "dispatch"]
