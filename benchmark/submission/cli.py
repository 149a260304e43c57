"""``pebench submit`` and ``pebench verify``: their options and commands.

Hooked into :mod:`pebench.cli` with :func:`add_parsers`; the commands are :data:`COMMANDS`. Bad
input (an incomplete sweep, a damaged or tampered archive) prints one ``pebench: error: ...`` line
and exits 2; a verification that ran and did not verify exits 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pebench.cli_plan import add_selection, plan
from pebench.errors import UserError


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``submit`` and ``verify`` to ``pebench``'s subparsers."""
    s = subparsers.add_parser(
        "submit",
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
    v = subparsers.add_parser(
        "verify",
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


def cmd_submit(args: argparse.Namespace) -> int:
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


def cmd_verify(args: argparse.Namespace) -> int:
    """``pebench verify``: 0 verified, 1 failed or unverified (2: refused, by the caller)."""
    from pebench.submission.verify import table, verify

    if args.sample < 2:
        raise UserError(f"--sample {args.sample}: at least 2 (a search trial and a final)")
    say = lambda line: print(line, file=sys.stderr)  # noqa: E731
    body = verify(args.archive, args.out, args.sample, args.seed, args.data_dir, args.install, say)
    print(table(body))
    return 0 if body["verdict"] == "verified" else 1


COMMANDS = {"submit": cmd_submit, "verify": cmd_verify}

__all__ = ["COMMANDS", "add_parsers"]
