"""``pebench list methods|tasks|suites|budgets`` (torch-free except third-party methods).

A command module (:mod:`pebench.commands`): :data:`NAME`, :func:`add_parser`, :func:`main`; what
is listed comes from :mod:`pebench.listing`.
"""

from __future__ import annotations

import argparse
import json
import sys

NAME = "list"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``list`` subcommand to ``pebench``'s subparsers and return it."""
    ls = subparsers.add_parser(NAME, help="list methods, tasks, suites or budgets")
    ls.add_argument("what", choices=["methods", "tasks", "suites", "budgets"])
    ls.add_argument("--json", action="store_true", help="one JSON list instead of text")
    ls.add_argument(
        "--peft",
        action="store_true",
        help="methods: also probe the Hugging Face peft types the installed peft supports "
        "(imports torch and peft: seconds)",
    )
    ls.add_argument(
        "--load",
        action="store_true",
        help="methods: import third-party method plugins to show their titles, presets and "
        "caps (imports torch: seconds); by default they are listed from their entry points",
    )
    ls.add_argument("--suite", help="tasks: only the tasks of this suite (e.g. vtab)")
    return ls


def main(args: argparse.Namespace) -> int:
    """``pebench list methods|tasks|suites|budgets``."""
    from pebench import listing

    if args.what == "methods":
        items = listing.methods(peft=args.peft, load=args.load)
    elif args.what == "tasks":
        items = listing.tasks(args.suite)
    else:
        items = getattr(listing, args.what)()
    if args.json:
        print(json.dumps(items, indent=1, default=str))
        return 0
    print(listing.format_items(items))
    if args.what in ("tasks", "suites"):
        for problem in listing.suite_problems():
            print(f"pebench: refused {problem}", file=sys.stderr)
    if args.what == "methods":
        for problem in listing.method_problems():
            print(f"pebench: refused {problem}", file=sys.stderr)
        if listing.has_unloaded(items):
            print(listing.LOAD_HINT)
        if not args.peft:
            print(listing.PEFT_HINT)
    return 0
