"""``pebench leaderboard``: rebuild leaderboard.md, results.csv and the figures from run rows.

A command module (:mod:`pebench.commands`): :data:`NAME`, :func:`add_parser`, :func:`main`; the
work is :mod:`pebench.report.leaderboard` (matplotlib and scipy; never torch). Without
``--results`` it shows the user's own runs, never the committed reference.
"""

from __future__ import annotations

import argparse
import os
import sys

from pebench.commands._plan import USER_RESULTS
from pebench.commands._results import add_results_option
from pebench.errors import UserError

NAME = "leaderboard"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``leaderboard`` subcommand to ``pebench``'s subparsers and return it."""
    lb = subparsers.add_parser(
        NAME,
        help=f"regenerate leaderboard.md, results.csv and plots (PNG + PDF) from your runs "
        f"({USER_RESULTS}/) or the --results folders",
        description="Rebuild leaderboard.md, results.csv and the figures from the run rows, as "
        "one unit (a kill or a full disk leaves the previous set or the new one). Without "
        f"--results it shows your runs, {USER_RESULTS}/ (what `pebench run` writes), into "
        f"{USER_RESULTS}/leaderboard.md, {USER_RESULTS}/results.csv and {USER_RESULTS}/plots/. "
        "Any folder other than the reference one works the same way (outputs into the first "
        "such folder). The committed reference is rebuilt only when named: `--results results` "
        "writes ./leaderboard.md, results/results.csv and results/plots/.",
    )
    add_results_option(lb, default=f"{USER_RESULTS}, your runs")
    lb.add_argument(
        "--output",
        metavar="PATH",
        help="leaderboard.md to write or check; results.csv and plots/ go beside it (default: "
        "see above)",
    )
    lb.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the leaderboard is stale (completes a killed write first)",
    )
    lb.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out result files that fail validation (each named on stderr) instead of "
        "refusing to build",
    )
    lb.add_argument(
        "--submissions",
        metavar="DIR",
        help="folder of verified submissions (`pebench verify --out`): each verified one joins "
        "the tables marked ✓; an unverified or failed one is listed with its reason, never "
        "mixed into the tables",
    )
    return lb


def leaderboard_results(args: argparse.Namespace) -> list[str]:
    """The folders ``pebench leaderboard`` reads: ``--results``, else the user's own runs.

    Without ``--results`` the report shows :data:`~pebench.commands._plan.USER_RESULTS` (what
    ``pebench run`` writes by default), never the committed reference: rebuilding that is
    ``--results results``, named.

    Raises:
        UserError: no ``--results`` and no user results folder (one line saying how to make one).
    """
    if args.results:
        return args.results
    if os.path.isdir(USER_RESULTS):
        return [USER_RESULTS]
    raise UserError(
        f"no {USER_RESULTS}/ here to show: `pebench run --method NAME` writes it (then run "
        "`pebench leaderboard` again), or pass `--results results` to rebuild the committed "
        "reference leaderboard"
    )


def main(args: argparse.Namespace) -> int:
    """``pebench leaderboard`` (matplotlib and scipy; never imports torch)."""
    from pebench.report import leaderboard

    folders = leaderboard_results(args)
    if args.check:
        stale = leaderboard.is_stale(folders, args.output, submissions=args.submissions)
        output = leaderboard.outputs(folders, args.output).leaderboard
        print(f"{output} is {'STALE' if stale else 'up to date'}")
        return 1 if stale else 0
    skipped: list[str] | None = [] if args.skip_bad else None
    written = leaderboard.generate(
        folders, args.output, skipped=skipped, submissions=args.submissions
    )
    for err in skipped or []:
        print(f"pebench leaderboard: skipped {err}", file=sys.stderr)
    paths = [written["results_csv"], written["leaderboard"], *written["plots"]]
    print(*paths, *written["plots_pdf"], sep="\n")
    return 0
