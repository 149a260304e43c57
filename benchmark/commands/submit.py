"""``pebench submit``: one method's complete sweep bundled into one archive.

A command module (:mod:`pebench.commands`): :data:`NAME`, :func:`add_parser`, :func:`main`; the
work is :mod:`pebench.submission.bundle`. Bad input (an incomplete sweep, two methods, an
archive name that is not ``.tar.gz``) prints one ``pebench: error: ...`` line and exits 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pebench.commands._plan import add_selection, plan
from pebench.errors import UserError

NAME = "submit"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``submit`` subcommand to ``pebench``'s subparsers and return it."""
    s = subparsers.add_parser(
        NAME,
        help="bundle a method's complete sweep (rows, predictions, source, budget, card) into "
        "one archive a maintainer can verify",
        description="Write one .tar.gz holding every row of the sweep the options select (as "
        "`pebench run` selects it) with its per-image predictions, the method's source files, "
        "the budget, the data manifests' hashes, the conformance result, the environment and a "
        "generated card; every member is hashed in its MANIFEST.json. An incomplete sweep is "
        "refused, naming what is missing.",
    )
    add_selection(s)
    s.add_argument("--out", required=True, metavar="FILE", help="archive to write (.tar.gz)")
    return s


def main(args: argparse.Namespace) -> int:
    """``pebench submit``: one method's complete sweep into one archive."""
    from pebench.submission.bundle import submit

    if "," in args.method or args.method == "all":
        raise UserError(f"--method {args.method}: a submission holds one method; name one")
    if not str(args.out).endswith((".tar.gz", ".tgz")):
        raise UserError(f"--out {args.out}: a submission is a .tar.gz file")
    (sweep,) = plan(args, checks=False)
    budget_file = args.budget if sweep.budget.id.startswith("file:") else None
    sha = submit(sweep, Path(args.out), budget_file)
    print(f"{args.out}  sha256 {sha}")
    return 0
