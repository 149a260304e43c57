"""``pebench export``: the leaderboard's tables as LaTeX, Markdown or a tidy CSV.

A command module (:mod:`pebench.commands`): :data:`NAME`, :func:`add_parser`, :func:`main`.
Never imports torch (the report subsystem only). Bad input (an unknown format, a missing results
folder, an output folder that does not exist, a full disk) prints one ``pebench: error: ...``
line and exits 2, with nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pebench.commands._results import add_results_option, results_of
from pebench.errors import UserError

NAME = "export"
FORMATS = ("latex", "markdown", "csv")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand to ``pebench``'s subparsers and return it."""
    p = subparsers.add_parser(
        NAME,
        help="the leaderboard's tables as LaTeX (booktabs), Markdown or a tidy CSV",
        description="Export the measured tables with the leaderboard's grouping: LaTeX tables "
        "(booktabs: \\usepackage{booktabs}), Markdown tables, or a tidy CSV with one line per "
        "(method config, backbone, weights, budget, data format, results folder, task): mean "
        "and std over seeds, seeds, parameters and the selected learning rate.",
    )
    p.add_argument("--format", required=True, metavar="FORMAT", help=" | ".join(FORMATS))
    add_results_option(p)
    p.add_argument("--output", metavar="PATH", help="file to write (default: standard output)")
    p.add_argument(
        "--variant",
        default="full",
        metavar="VARIANT",
        help="latex: full (every task under its group, best marked, scaled to the line width "
        "when wider) or narrow (group and suite means only, no task columns)",
    )
    p.add_argument(
        "--columns",
        metavar="KEYS",
        help="latex: comma-separated columns after the method, instead of the variant's: "
        "params, params_incl, tasks, groups, means, ci, rank, rank_ci, tier, lr, seeds",
    )
    return p


def main(args: argparse.Namespace) -> int:
    """``pebench export``: validate, render in memory, then print or write atomically."""
    from pebench import fsio
    from pebench.report.aggregate import aggregate
    from pebench.report.export import export
    from pebench.report.latex import column_specs

    if args.format not in FORMATS:
        raise UserError(f"--format {args.format!r}: expected one of {', '.join(FORMATS)}")
    if args.output is not None and not Path(args.output).parent.is_dir():
        raise UserError(f"--output {args.output}: folder {Path(args.output).parent} does not exist")
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    if args.format != "latex" and (columns or args.variant != "full"):
        raise UserError("--variant and --columns apply to --format latex only")
    column_specs(args.variant, columns)  # a bad variant or column: one line, before reading
    text = export(aggregate(results_of(args)), args.format, variant=args.variant, columns=columns)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        fsio.atomic_write_text(args.output, text)
    except OSError as err:
        raise UserError(
            f"cannot write --output {args.output} ({err.strerror or err}); nothing written"
        ) from err
    print(args.output)
    return 0
