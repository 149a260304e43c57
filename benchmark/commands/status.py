"""``pebench status``: done / running / failed / missing runs of the grid the options select.

A command module (:mod:`pebench.commands`): :data:`NAME`, :func:`add_parser`, :func:`main`.
"""

from __future__ import annotations

import argparse
import json

from pebench.commands._plan import add_selection, plan

NAME = "status"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``status`` subcommand to ``pebench``'s subparsers and return it."""
    st = subparsers.add_parser(NAME, help="done / running / failed / missing runs of a sweep")
    add_selection(st)
    st.add_argument("--json", action="store_true")
    return st


def main(args: argparse.Namespace) -> int:
    """``pebench status``: done / running / failed / missing runs of the selected grid."""
    from pebench.sweep.status import format_table, other_code, summarize, sweep_states

    sweeps = plan(args, checks=False, unprepared_ok=True)
    summary = summarize(sweep_states(sweeps), other_code(sweeps))
    print(json.dumps(summary, indent=1) if args.json else format_table(summary))
    return 0
