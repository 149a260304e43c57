"""``pebench verify``: check a submission archive and re-run a sample of its runs.

A command module (:mod:`pebench.commands`): :data:`NAME`, :func:`add_parser`, :func:`main`; the
work is :mod:`pebench.submission.verify`. Bad input (a damaged or tampered archive) prints one
``pebench: error: ...`` line and exits 2; a verification that ran and did not verify exits 1.
"""

from __future__ import annotations

import argparse
import sys

from pebench.errors import UserError

NAME = "verify"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``verify`` subcommand to ``pebench``'s subparsers and return it."""
    v = subparsers.add_parser(
        NAME,
        help="check a submission archive and re-run a sample of its runs",
        description="Check the archive (safe members, hashes), its rows (ids, records, one "
        "sweep), its code (source hash), budget and data (against the data prepared here), "
        "then re-run the conformance checks and --sample runs chosen with --seed and compare: "
        "bit for bit where the environments match, else within a tolerance from the run's own "
        "noise. Writes <out>/<archive name>/verification.json and the submitted rows there.",
    )
    v.add_argument("archive", metavar="FILE", help="the submission (.tar.gz)")
    v.add_argument("--sample", type=int, default=5, metavar="K", help="runs to re-run (5)")
    v.add_argument("--seed", type=int, default=0, help="the verifier's seed for the sample")
    v.add_argument("--data-dir", help="prepared data of real suites (as for pebench run)")
    v.add_argument(
        "--out", default="submissions", metavar="DIR", help="work folder root (submissions)"
    )
    v.add_argument(
        "--install",
        action="store_true",
        help="install the submitted plugin into a fresh virtual environment for the re-runs "
        "(read its source in the archive first: it is code that will run)",
    )
    return v


def main(args: argparse.Namespace) -> int:
    """``pebench verify``: 0 verified, 1 failed or unverified (2: refused, by the caller)."""
    from pebench.submission.verify import table, verify

    if args.sample < 2:
        raise UserError(f"--sample {args.sample}: at least 2 (a search trial and a final)")
    say = lambda line: print(line, file=sys.stderr)  # noqa: E731
    body = verify(args.archive, args.out, args.sample, args.seed, args.data_dir, args.install, say)
    print(table(body))
    return 0 if body["verdict"] == "verified" else 1
