"""``pebench estimate``: FLOPs and GPU hours of a sweep before running it (counted, not trained).

A command module (:mod:`pebench.commands`): :data:`NAME`, :func:`add_parser`, :func:`main`.
``--precision PTS`` instead derives seeds from a pilot sweep (:mod:`pebench.commands._precision`,
torch-free).
"""

from __future__ import annotations

import argparse
import json

from pebench.commands import _precision
from pebench.commands._output import say
from pebench.commands._plan import method_list
from pebench.errors import UserError

NAME = "estimate"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``estimate`` subcommand to ``pebench``'s subparsers and return it."""
    es = subparsers.add_parser(
        NAME, help="FLOPs and GPU hours of a sweep before running it (counted, not trained)"
    )
    es.add_argument("--method", required=True, help="NAME[.PRESET] or a comma-separated list")
    es.add_argument("--tasks", help="suite(s) and/or task(s), comma-separated (default: vtab)")
    es.add_argument(
        "--budget",
        help="budget id or a budget file PATH (.toml or .json) (default: the suite's budget)",
    )
    es.add_argument("--backbone", help="timm model name (default: the budget's backbone)")
    es.add_argument(
        "--tflops",
        type=float,
        default=150.0,
        help="sustained TFLOP/s of your GPU for this workload (default 150: an assumption, "
        "about 40%% of an H100's dense bf16 peak; measure yours)",
    )
    es.add_argument(
        "--measure",
        metavar="DEVICE",
        help="take the throughput from a short measured run of the harness on DEVICE (cpu, "
        "cuda, cuda:N: random weights, the budget's image size and batch) instead of --tflops",
    )
    es.add_argument("--json", action="store_true")
    _precision.add_arguments(es)
    return es


def main(args: argparse.Namespace) -> int:
    """``pebench estimate``: images × counted FLOPs ÷ sustained throughput, per method."""
    if args.precision is not None:  # seeds from a precision target (torch-free)
        return _precision.cmd_precision(args)
    from pebench.budget import get_budget
    from pebench.datasets import get_suite, resolve_tasks
    from pebench.estimate import estimate, format_table
    from pebench.methods import split_spec

    if args.tflops <= 0:
        raise UserError(f"--tflops must be positive, got {args.tflops}")
    specs = resolve_tasks(args.tasks or "vtab")
    budget = get_budget(args.budget or get_suite(specs[0].suite).default_budget)
    views = budget.video.views if budget.video else 1
    out = []
    methods = method_list(args.method)
    progress = say("pebench estimate --measure")
    if args.measure:
        progress(
            f"{len(methods)} method(s) on {args.measure}: each a warm-up epoch, a timed epoch "
            f"and two evaluations of 20 batches of {budget.batch_size} at {budget.image_size} px; "
            "the warm-up epoch of each says how long the rest takes"
        )
    for method in methods:
        name, preset = split_spec(method)
        e = estimate(
            name, specs, budget, args.backbone, preset=preset or "default", test_views=views
        )
        row = {**e.as_dict(), "method": method, "tflops": args.tflops}
        if args.measure:
            from pebench.harness import measure

            m = measure(
                name, budget, args.backbone or budget.backbone, args.measure,
                specs[0].num_classes, preset=preset, say=progress,
            )  # fmt: skip
            tr, ev, fixed = m.train_images_per_s, m.eval_images_per_s, m.run_overhead_s
            row.update(
                tflops=e.train_step_flops * tr / 1e12,
                measured_train_images_per_s=tr,
                measured_eval_images_per_s=ev,
                measured_run_overhead_s=fixed,
                measured_on=args.measure,
            )
            out.append({**row, "hours": e.measured_hours(tr, ev, fixed)})
            continue
        out.append({**row, "hours": e.hours(args.tflops)})
    print(json.dumps(out, indent=1) if args.json else format_table(out, budget, len(specs)))
    return 0
