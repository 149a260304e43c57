"""``pebench run``: train and evaluate methods on tasks under a budget, where the executor says.

A command module (:mod:`pebench.commands`): :data:`NAME`, :func:`add_parser`, :func:`main`. Every
option is checked and every sweep planned (conformance checks, weights loaded) before anything
runs or is written; the dispatcher then runs the grids (:mod:`pebench.sweep.dispatch`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from pebench.commands._args import device, executor_options, run_options
from pebench.commands._output import EXIT_INTERRUPTED, print_outcome, progress_line
from pebench.commands._plan import add_selection, plan
from pebench.sweep.engines import add_arguments as add_executor_arguments

NAME = "run"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``run`` subcommand to ``pebench``'s subparsers and return it."""
    r = subparsers.add_parser(NAME, help="train and evaluate a method on tasks under a budget")
    add_selection(r)
    r.add_argument("--device", default="auto", type=device, help="auto, cpu, cuda or cuda:N")
    r.add_argument(
        "--threads", type=int, help="torch threads per run (default: the cores shared out)"
    )
    r.add_argument(
        "--data-workers",
        type=int,
        default=0,
        help="DataLoader worker processes per run for datasets decoded per example (video); "
        "changes speed only, never the numbers",
    )
    r.add_argument(
        "--nproc-per-run",
        type=int,
        default=1,
        help="processes (GPUs) per run: > 1 runs each run with torch DDP launched by torchrun "
        "(gloo on CPU, nccl on GPU); only rank 0 writes the row",
    )
    r.add_argument("--timeout", type=float, help="seconds per run (default: the budget's)")
    r.add_argument(
        "--compile",
        action="store_true",
        help="train and evaluate through torch.compile (recorded in each row's compile column; "
        "changes round-off only)",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument(
        "--log-to",
        default="",
        metavar="TRACKERS",
        help="also send each run's epoch records to tensorboard and/or wandb (offline mode), "
        "comma-separated; every run always writes <results>/logs/<run_id>.log and .epochs.csv",
    )
    r.add_argument(
        "--epoch-val",
        action="store_true",
        help="score the validation split after every epoch of the search runs, for the logs "
        "(selection still uses the last epoch; the test split is never scored early)",
    )
    r.add_argument(
        "--keep-state",
        action="store_true",
        help="keep each run's tunable state (method tensors and head, safetensors: exactly what "
        "was counted and evaluated) beside its row, as runs/<run_id>.state.safetensors",
    )
    r.add_argument(
        "--rerun",
        action="store_true",
        help="run the grid again although rows exist (they are moved to runs/replaced/<time>/, "
        "never deleted); by default recorded runs are reused",
    )
    r.add_argument(
        "--skip-checks",
        action="store_true",
        help="run methods without the conformance checks pebench run requires (rows record "
        "checks=skipped and the leaderboard marks them)",
    )
    ex = r.add_argument_group("executor (where the runs execute)")
    add_executor_arguments(ex)
    return r


def main(args: argparse.Namespace) -> int:
    """``pebench run``: every method in ``--method`` (comma-separated, or ``all``)."""
    from pebench.sweep.dispatch import dispatch
    from pebench.sweep.plan import config_summary
    from pebench.sweep.rerun import announce, finish

    where = executor_options(args)
    # before any run; the weights load even with --skip-checks (a bad file is one line)
    sweeps = plan(args, run_options(args), checks=not args.skip_checks, load_weights=True)
    for sweep in sweeps:
        print(f"pebench run {config_summary(sweep)}", file=sys.stderr)
    if line := announce(sweeps, args.rerun):
        print(line, file=sys.stderr)
    try:
        with where.make() as executor:
            if getattr(executor, "cluster", "slurm") != "slurm":
                print(
                    f"pebench run: sbatch not found; submitit runs the jobs on its "
                    f"{executor.cluster!r} cluster",
                    file=sys.stderr,
                )
            rows = dispatch(sweeps, executor, on_row=_progress_printer(sweeps))
    except KeyboardInterrupt:
        away = "" if where.name == "local" else f" ({where.name} jobs already started keep running)"
        print(
            f"pebench: interrupted; finished runs are kept in {args.results}/runs/, the runs in "
            f"progress were stopped without a row{away}; rerun the same command to continue",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finish(sweeps)  # a journalled --rerun of these grids ran to the end
    return print_outcome(rows, args.results)


def _progress_printer(sweeps: list) -> Callable[[dict[str, Any]], None]:
    """A callback printing one line (stderr) per run finished by this invocation."""
    import datetime as dt

    from tqdm.auto import tqdm

    from pebench.sweep.rerun import grid_size

    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    total, seen = grid_size(sweeps), set()

    def on_row(row: dict[str, Any]) -> None:
        seen.add(row["run_id"])  # a retried run delivers a row per attempt: count it once
        if str(row.get("created_at") or "") >= started:  # run now, not found recorded
            tqdm.write(progress_line(row, len(seen), total), file=sys.stderr)

    return on_row
