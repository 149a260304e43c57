"""``pebench compare A B``: the paired comparison of two leaderboard rows, with its verdict.

A command module (:mod:`pebench.commands`): :data:`NAME`, :func:`add_parser`, :func:`main`.
Never imports torch (the report subsystem only). Bad input (an unknown row or suite, a missing
results folder) prints one ``pebench: error: ...`` line and exits 2.
"""

from __future__ import annotations

import argparse
import sys

from pebench.commands._results import add_results_option, results_of
from pebench.errors import UserError

NAME = "compare"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``compare`` subcommand to ``pebench``'s subparsers and return it.

    Building the parser imports nothing of the report (scipy is needed only to compare).
    """
    p = subparsers.add_parser(
        NAME,
        help="paired difference of two rows' suite means, with its interval and verdict",
        description="Compare two rows of a suite table (labels as the leaderboard shows them, "
        "or method names when unique): the paired difference of suite means with its 95% "
        "interval and p (Holm-adjusted over the table's pairs), the probability of "
        "improvement with its interval, per-task differences and the difference with each "
        "task left out. The verdict follows one rule, printed with it and stated in the README "
        "(Reading the leaderboard): at least 5 seeds per task, Holm-adjusted p < 0.05, a "
        "difference of at least --threshold points, no selection on a grid edge or below a "
        "cliff.",
    )
    p.add_argument("a", metavar="A", help="a row label or method name")
    p.add_argument("b", metavar="B", help="another row label or method name")
    p.add_argument("--suite", metavar="S", help="suite (default: the one suite both rows are in)")
    p.add_argument(
        "--threshold",
        type=float,
        metavar="PTS",
        help="practical threshold in accuracy points (default: the rule's 1 pt)",
    )
    add_results_option(p)
    return p


def main(args: argparse.Namespace) -> int:
    """``pebench compare``: build the suite table as the leaderboard does, compare, print."""
    try:
        from pebench.report.aggregate import aggregate
        from pebench.report.compare import THRESHOLD, compare, render
        from pebench.report.tables import tables
    except ImportError as err:  # a machine with only what runs need (scripts/gpu_check.sh)
        raise UserError(
            f"pebench compare needs {err.name or err}: {err} (install pebench's dependencies: "
            "pip install -e .)"
        ) from None
    if args.threshold is None:
        args.threshold = THRESHOLD
    if not args.threshold >= 0:
        raise UserError(f"--threshold {args.threshold}: expected a number of points >= 0")
    suite_tables = tables(aggregate(results_of(args)), None, None)
    names = [t.info.name for t in suite_tables]
    if args.suite is not None:
        chosen = [t for t in suite_tables if t.info.name == args.suite]
        if not chosen:
            raise UserError(f"--suite {args.suite!r}: no rows; suites with rows: {names}")
    elif len(suite_tables) == 1:
        chosen = suite_tables  # its own error names a row it lacks
    else:
        chosen = [t for t in suite_tables if _has(t, args.a) and _has(t, args.b)]
        if len(chosen) != 1:
            which = "no suite has" if not chosen else "several suites have"
            raise UserError(
                f"{which} both {args.a!r} and {args.b!r}; pass --suite (suites with rows: {names})"
            )
    sys.stdout.write(render(compare(chosen[0], args.a, args.b, args.threshold)))
    return 0


def _has(table: object, name: str) -> bool:
    from pebench.report.compare import find

    try:
        find(table, name)  # type: ignore[arg-type]
    except UserError:
        return False
    return True
