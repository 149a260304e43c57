"""Results folders: which ones a report reads, how it names them, and where its outputs go.

A report reads one or more results folders (``pebench leaderboard --results A --results B``).
Rows of different folders are never mixed into one table row: the folder is part of a row's
configuration (``results_dir``), so the committed reference rows and a user's own rerun of the
same runs (same run ids, other numbers) stay apart, each labelled with its folder.

The outputs (``results.csv``, ``plots/``, ``leaderboard.md``) of the reference folder
(``results`` in the working folder) go where they always went: ``results/results.csv``,
``results/plots/`` and ``./leaderboard.md``. A report that reads any other folder writes into
the first such folder (``<dir>/results.csv``, ``<dir>/plots/``, ``<dir>/leaderboard.md``), so a
user's leaderboard never overwrites the committed one. A leaderboard path other than that default
(``pebench leaderboard --output PATH``) takes the whole set with it: ``results.csv`` and
``plots/`` go beside it, in its folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pebench.store import ROW_SUFFIX, RunStore

#: the committed reference results folder (relative to the working folder)
REFERENCE = "results"
#: the leaderboard file name
LEADERBOARD = "leaderboard.md"
#: the raw rows of every folder read, in one file
RESULTS_CSV = "results.csv"
#: the figures folder inside the output folder
PLOTS = "plots"

ResultsArg = str | Path | Sequence[str | Path]


def results_dirs(results: ResultsArg) -> list[Path]:
    """The results folders of ``results`` (one path or several), in order, each once.

    Args:
        results: a folder, or a sequence of folders (a folder given twice is read once).

    Returns:
        The folders as given (not resolved), duplicates of an earlier one dropped.

    """
    given = [results] if isinstance(results, str | Path) else list(results)
    out: list[Path] = []
    seen: set[Path] = set()
    for d in given:
        key = Path(os.path.abspath(d))
        if key not in seen:
            seen.add(key)
            out.append(Path(d))
    return out


def is_reference(folder: str | Path) -> bool:
    """Whether ``folder`` is the reference results folder (``./results``)."""
    return Path(os.path.abspath(folder)) == Path(os.path.abspath(REFERENCE))


@dataclass(frozen=True)
class Outputs:
    """Where one report writes.

    Attributes:
        home: the output folder: ``results.csv`` goes here, and the write journal of
            :mod:`pebench.report.commit` lives here while a write is in progress.
        leaderboard: the ``leaderboard.md`` path.
        plots: the figures folder.

    """

    home: Path
    leaderboard: Path
    plots: Path

    @property
    def results_csv(self) -> Path:
        """The ``results.csv`` path."""
        return self.home / RESULTS_CSV


def outputs(
    results: ResultsArg,
    leaderboard: str | Path | None = None,
    plots: str | Path | None = None,
) -> Outputs:
    """The default outputs of a report on ``results`` (see the module docstring).

    Args:
        results: the results folder(s) read.
        leaderboard: the ``leaderboard.md`` path, or None for the default; another path than
            the default makes its folder the home (``results.csv`` and ``plots/`` beside it).
        plots: the figures folder, or None for ``<home>/plots``.

    Returns:
        The :class:`Outputs`.

    """
    dirs = results_dirs(results)
    own = [d for d in dirs if not is_reference(d)]
    # a single folder is its own home, whatever its name (the API's historical behaviour)
    home = dirs[0] if len(dirs) == 1 else (own[0] if own else dirs[0])
    default = home / LEADERBOARD if own else Path(LEADERBOARD)
    if leaderboard is None:
        leaderboard = default
    elif os.path.abspath(leaderboard) != os.path.abspath(default):
        home = Path(leaderboard).parent  # the set goes where its leaderboard goes
    return Outputs(home, Path(leaderboard), home / PLOTS if plots is None else Path(plots))


def display(folder: str | Path, start: str | Path) -> str:
    """``folder`` relative to the folder ``start`` (POSIX separators), for generated text."""
    rel = os.path.relpath(os.path.abspath(folder), os.path.abspath(start))
    return Path(rel).as_posix()


def runs_glob(dirs: Sequence[Path], leaderboard: str | Path) -> str:
    """The run files read, relative to the leaderboard's folder: ``results/runs/*.csv``."""
    start = Path(os.path.abspath(leaderboard)).parent
    parts = []
    for d in dirs:
        parts.append(f"{display(RunStore(d).runs, start)}/*{ROW_SUFFIX}")
    # the text sits in an HTML comment: a "--" in a folder name must not end it
    return " + ".join(parts).replace("--", "-\u2010")
