"""``pebench estimate --precision PTS``: seeds and search replicates from a precision target.

Reads a pilot sweep (a results folder with run records), splits the error of a difference of two
rows' suite means into the parts a design controls (:mod:`pebench.report.precision`) and prints,
for a few designs (seeds × search replicates, optionally other test and validation sizes), the
runs and run-hours per method and the smallest difference the leaderboard would resolve (80 %
power), then the cheapest design that reaches the target. Torch-free. A helper of the ``estimate``
command (:mod:`pebench.commands.estimate`).
"""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import replace
from typing import Any

from pebench.errors import UserError

#: seed counts and search replicates the table shows (besides the pilot's own design)
SEEDS = (3, 5, 10, 15, 20)
REPLICATES = (1, 3)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``--precision`` options of ``pebench estimate``."""
    g = p.add_argument_group("seeds from a precision target (--precision)")
    g.add_argument(
        "--precision",
        type=float,
        metavar="PTS",
        help="the smallest difference of two suite means (accuracy points) a table should "
        "resolve at 80%% power: prints designs (seeds x search replicates) with their cost and "
        "resolution, from the pilot sweep in --results (its records), and the cheapest that "
        "reaches PTS",
    )
    g.add_argument(
        "--results", metavar="DIR", help="the pilot sweep's results folder (default: results)"
    )
    g.add_argument(
        "--test-images",
        type=int,
        metavar="N",
        help="test images per task of the designs (default: the pilot's; a larger task version)",
    )
    g.add_argument(
        "--val-images",
        type=int,
        metavar="N",
        help="validation (selection) images per task of the designs (default: the pilot's)",
    )


def _table(args: argparse.Namespace) -> tuple[Any, list[dict[str, Any]]]:
    """The pilot's suite table and every row of the pilot folder."""
    from pebench.report.aggregate import aggregate
    from pebench.report.tables import tables

    folder = args.results or "results"
    df = aggregate(folder)
    suite_tables = [t for t in tables(df, None, None) if t.stats is not None]
    names = [t.info.name for t in suite_tables]
    if args.tasks is not None:
        chosen = [t for t in suite_tables if t.info.name == args.tasks]
    else:
        chosen = suite_tables if len(suite_tables) == 1 else []
    if not chosen:
        raise UserError(
            f"--tasks {args.tasks!r}: name one suite of the pilot in {folder} (suites with a "
            f"complete table: {names or 'none'})"
        )
    return chosen[0], df


def _pilots(table: Any, methods: list[str] | None) -> list[dict[str, Any]]:
    from pebench.report.precision import Pilot

    rows = []
    for e in table.entries:
        if e.stats is None or e.stats.runs is None:
            continue
        if methods is not None and e.key[0] not in methods and e.label not in methods:
            continue
        rows.append(
            {
                t: Pilot(
                    runs.values,
                    runs.correct,
                    e.stats.search.get(t, []),
                    e.stats.n_val.get(t),
                    e.stats.grid.get(t, ()),
                )
                for t, runs in e.stats.runs.tasks.items()
            }
        )
    return rows


def cmd_precision(args: argparse.Namespace) -> int:
    """Print the design table (see the module docstring)."""
    from pebench.report.aggregate import ranking_weights
    from pebench.report.precision import Design, Model

    if not args.precision > 0:
        raise UserError(f"--precision {args.precision}: expected a number of points > 0")
    for name in ("test_images", "val_images"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    table, all_rows = _table(args)
    methods = None if args.method == "all" else [m.strip() for m in args.method.split(",")]
    pilots = _pilots(table, methods)
    if len(pilots) < 2:
        raise UserError("the pilot needs at least two rows with a complete suite mean")
    if any(p.correct is None for row in pilots for p in row.values()):
        raise UserError(
            "the pilot's rows have no records (per-image predictions): rerun the pilot with "
            "this pebench, e.g. `pebench run --method lora,linear,full --results pilot`"
        )
    model = Model(pilots, ranking_weights(table.info))
    tasks = len(table.info.tasks)
    trials = max(len(v) for row in pilots for v in (p.trials for p in row.values()))
    final_s = _median_time(all_rows, table, "final")
    search_s = _median_time(all_rows, table, "search")
    pilot_seeds = min(len(p.values) for row in pilots for p in row.values())
    designs = [Design(pilot_seeds, 1)] + [
        Design(s, r) for r in REPLICATES for s in SEEDS if (s, r) != (pilot_seeds, 1)
    ]
    designs = [Design(d.seeds, d.replicates, args.test_images, args.val_images) for d in designs]
    print(
        f"pebench estimate --precision {args.precision:g}: pilot {table.info.name} "
        f"({len(pilots)} rows, {tasks} tasks, {pilot_seeds} seeds, {trials} trials; run time "
        f"median {search_s:.1f} s search, {final_s:.1f} s final, on the pilot's device"
        + (f"; designs with {args.test_images} test images" if args.test_images else "")
        + (f", {args.val_images} validation images" if args.val_images else "")
        + ")"
    )
    print(
        f"{'seeds':>5} {'replicates':>10} {'runs':>11} {'run-hours':>12} "
        f"{'resolvable':>10} {'+ selection':>11} {'+ smoothed':>10}"
    )
    reached = None
    for d in designs:
        per_method = tasks * (trials * d.replicates + d.seeds)
        hours = tasks * (trials * d.replicates * search_s + d.seeds * final_s) / 3600
        plain, noisy = model.resolvable(d)
        smoothed = model.resolvable(replace(d, selection="smoothed"))[1]
        if plain <= args.precision and (reached is None or hours < reached[1]):
            reached = (d, hours, plain)
        print(
            f"{d.seeds:>5} {d.replicates:>10} {per_method:>11} {hours:>12.2f} "
            f"{plain:>10.2f} {noisy:>11.2f} {smoothed:>10.2f}"
        )
    print(
        "runs and run-hours: per method (every task); resolvable: median over the pilot's pairs "
        "of rows of the minimum detectable difference of two suite means (80 % power, "
        "α = 0.05 two-sided; seed + paired test-set error, as the leaderboard computes it); "
        "+ selection: with the simulated variance of which learning rate the search retrains "
        "(search replicates shrink it) under the highest-mean rule, + smoothed: under the "
        "smoothed rule (a budget's selection)"
    )
    if reached is None:
        print(
            f"no design above reaches {args.precision:g} pts: more seeds, a larger test set "
            "(--test-images) or more epochs (a pilot at the target epochs) are needed"
        )
        return 0
    d, hours, plain = reached
    print(
        f"cheapest design reaching {args.precision:g} pts: {d.seeds} seeds, {d.replicates} "
        f"search replicate(s): {plain:.2f} pts, {hours:.2f} run-hours per method "
        f"({hours * len(pilots):.1f} for the pilot's {len(pilots)} rows); fix the seed count in "
        "the budget for every row (never per row)"
    )
    return 0


def _median_time(rows: list[dict[str, Any]], table: Any, phase: str) -> float:
    """Median wall time (s) of the pilot's ``ok`` runs of ``phase`` on the suite's tasks."""
    times = [
        r["wall_time_s"]
        for r in rows
        if r["phase"] == phase and r["status"] == "ok" and r["task"] in table.info.tasks
        and not math.isnan(r["wall_time_s"])
    ]  # fmt: skip
    return statistics.median(times) if times else math.nan
