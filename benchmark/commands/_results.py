"""The ``--results`` folders the report commands read (``export``, ``compare``, ``leaderboard``).

A shared helper of the command modules (:mod:`pebench.commands`); imports nothing heavy.
"""

from __future__ import annotations

import argparse

#: what ``export`` and ``compare`` read without ``--results``: the committed reference runs
DEFAULT_RESULTS = "results"


def add_results_option(p: argparse.ArgumentParser, default: str = DEFAULT_RESULTS) -> None:
    """``--results DIR``, repeatable (rows merged; each folder's rows stay apart).

    Args:
        p: the subcommand's parser.
        default: what the help text says is read without ``--results``.
    """
    p.add_argument(
        "--results",
        action="append",
        metavar="DIR",
        help=f"results folder to read (default: {default}); repeat to read several: their rows "
        "are merged but never averaged across folders (each folder's runs are rows of their "
        "own, labelled with the folder), so the same run id in two folders is kept apart",
    )


def results_of(args: argparse.Namespace) -> list[str]:
    """The ``--results`` folders given, or the default."""
    return args.results or [DEFAULT_RESULTS]


__all__ = ["DEFAULT_RESULTS", "add_results_option", "results_of"]
