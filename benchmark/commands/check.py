"""``pebench check METHOD``: the conformance suite for one method, one line per check.

A command module (:mod:`pebench.commands`): :data:`NAME`, :func:`add_parser`, :func:`main`; the
checks are :mod:`pebench.conformance`. Exit 1 when any check fails.
"""

from __future__ import annotations

import argparse

from pebench.commands._plan import add_overrides

NAME = "check"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``check`` subcommand to ``pebench``'s subparsers and return it."""
    ch = subparsers.add_parser(NAME, help="run the conformance suite for one method")
    ch.add_argument("method", help="method NAME[.PRESET] (pebench list methods)")
    ch.add_argument("--preset", help="method preset (default: the NAME's, else default)")
    add_overrides(ch)
    ch.add_argument(
        "--eval-batch",
        type=int,
        default=32,
        help="the largest evaluation batch to check outputs at (default: 32)",
    )
    ch.add_argument(
        "--seed",
        type=int,
        help="draw sizes, classes, weights and inputs from this seed, as the pebench run gate "
        "does (its failure names the seed); default: fixed draws",
    )
    return ch


def main(args: argparse.Namespace) -> int:
    """``pebench check METHOD``."""
    from pebench.conformance import Setting, run_checks
    from pebench.methods import split_spec

    name, preset = split_spec(args.method)
    overrides = tuple(sorted(dict(args.overrides or []).items()))
    setting = Setting(args.preset or preset, overrides, args.eval_batch, args.seed)
    results = run_checks(name, setting=setting)
    for r in results:
        print(
            f"{'PASS' if r.passed else 'FAIL'}  {r.name}"
            + (f"\n      {r.detail}" if r.detail else "")
        )
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 0 if failed == 0 else 1
