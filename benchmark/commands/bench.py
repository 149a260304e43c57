"""``pebench bench``: side-by-side method speed relative to the frozen backbone.

A command module (:mod:`pebench.commands`): :data:`NAME`, :func:`add_parser`, :func:`main`.
``--harness`` measures pebench's loops against a bare timm + torch loop (:mod:`pebench.harness`)
instead of the methods against each other (:mod:`pebench.bench`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pebench.commands._output import say
from pebench.commands._plan import method_list

NAME = "bench"
#: the methods ``pebench bench --harness`` measures by default (``--methods all``: every one)
HARNESS_METHODS = "linear,lora"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to ``pebench``'s subparsers and return it."""
    be = subparsers.add_parser(
        NAME, help="side-by-side method speed relative to the frozen backbone"
    )
    be.add_argument(
        "--methods",
        help="comma-separated names, or 'all' (default: all; with --harness "
        f"{HARNESS_METHODS}: the harness measures each method for about a minute on a CPU)",
    )
    be.add_argument(
        "--backbone",
        default="pebench_vit_micro",
        help="timm model name (default: pebench_vit_micro)",
    )
    be.add_argument(
        "--image-size", type=int, default=32, help="input side length in pixels (default: 32)"
    )
    be.add_argument("--batch-size", type=int, default=64, help="images per step (default: 64)")
    be.add_argument("--steps", type=int, default=5, help="steps per measurement")
    be.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median taken)")
    be.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    be.add_argument("--json", action="store_true", help="one JSON list instead of a table")
    be.add_argument(
        "--harness",
        action="store_true",
        help="pebench's training/eval loops against a bare timm + torch loop on the same model, "
        "batch, optimizer and data: harness / bare ratios (median [IQR] over the rounds)",
    )
    return be


def main(args: argparse.Namespace) -> int:
    """``pebench bench`` (``--harness``: the harness against a bare loop)."""
    if args.harness:
        from pebench.harness import as_dicts, to_markdown
        from pebench.harness import run_harness_bench as run_bench
    else:
        from pebench.bench import as_dicts, run_bench, to_markdown

    spec = args.methods or (HARNESS_METHODS if args.harness else "all")
    methods = method_list(spec)
    extra: dict[str, Any] = {}
    if args.harness:
        if spec == "all":
            methods = [m for m in methods if not m.startswith("peft:")]
        extra["say"] = say("pebench bench --harness")
    rows = run_bench(
        methods, backbone=args.backbone, image_size=args.image_size,
        batch_size=args.batch_size, steps=args.steps, rounds=args.rounds, device=args.device,
        **extra,
    )  # fmt: skip
    if args.json:
        print(json.dumps(as_dicts(rows), indent=1))
    else:
        print(
            to_markdown(
                rows,
                f"backbone {args.backbone} @ {args.image_size}px, batch "
                f"{args.batch_size}, {args.device}, median of {args.rounds} rounds",
            )
        )
    return 0
