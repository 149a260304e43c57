"""Which runs a command selects: the options ``run``, ``status`` and ``submit`` share, and the plan.

A shared helper of the command modules (:mod:`pebench.commands`). Parsing the options needs no
model; :func:`plan` validates them into one sweep per method
(:func:`pebench.sweep.plan.plan_sweeps`) before anything runs or is written.
"""

from __future__ import annotations

import argparse
import sys

from pebench.commands._args import key_value, seeds
from pebench.errors import PebenchError

#: where a user's runs go by default: never the committed reference results (``results/``)
USER_RESULTS = "my-results"


def add_overrides(p: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable): method config overrides."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=key_value,
        metavar="KEY=VALUE",
        help="override a method config field (repeatable)",
    )


def add_selection(p: argparse.ArgumentParser) -> None:
    """The options that select a grid of runs (shared by ``run`` and ``status``)."""
    p.add_argument(
        "--method", required=True, help="NAME[.PRESET], a comma-separated list, or 'all'"
    )
    p.add_argument("--preset", help="method preset (alternative to NAME.PRESET)")
    add_overrides(p)
    p.add_argument("--tasks", default="demo", help="suite(s) and/or task(s), comma-separated")
    p.add_argument(
        "--budget",
        help="budget id (pebench list budgets) or a budget file PATH (.toml or .json, the fields "
        "of a budget; its rows record file:<name>@<content hash>) (default: the suite's budget)",
    )
    p.add_argument("--backbone", help="timm model name (default: the budget's backbone)")
    p.add_argument(
        "--weights",
        help="local checkpoint PATH, or 'random' (default: the budget's weights: the backbone's "
        "pretrained ones, i.e. the embedded checkpoint for pebench_vit_micro (the demo) and the "
        "Hugging Face hub otherwise; random init for the smoke budgets)",
    )
    p.add_argument("--seeds", type=seeds, help="final-run seeds, e.g. 0,1,2 (default: budget's)")
    p.add_argument(
        "--results",
        default=USER_RESULTS,
        help=f"results folder (default: {USER_RESULTS}; the committed reference runs live in "
        "results/, written only when named)",
    )
    p.add_argument(
        "--data-dir",
        help="prepared cache folder of real suites, image and video (the --cache-dir of "
        "`pebench prepare`; default: $PEBENCH_CACHE or ~/.cache/pebench)",
    )


def method_list(spec: str) -> list[str]:
    """The names ``--method`` selects; ``all`` skips (and reports) plugins that cannot load."""
    if spec != "all":
        return [m.strip() for m in spec.split(",") if m.strip()]
    from pebench.methods import get_method_class, registry

    usable = []
    for name in registry.names():
        try:
            get_method_class(name)
            usable.append(name)
        except PebenchError as err:
            print(f"pebench: skipping {err}", file=sys.stderr)
    for problem in registry.problems:
        print(f"pebench: refused {problem}", file=sys.stderr)
    return usable


def plan(
    args: argparse.Namespace,
    options: object = None,
    checks: bool = True,
    unprepared_ok: bool = False,
    load_weights: bool | None = None,
) -> list:
    """One validated sweep per method of ``--method`` (nothing runs or is written).

    ``unprepared_ok`` (``pebench status`` only): tasks without prepared data are noted in each
    sweep instead of refused (:func:`pebench.sweep.plan.plan_sweeps`). ``load_weights``
    (default: with the checks) loads the backbone's weights once, so a bad weights file is one
    line before anything runs; ``pebench run --skip-checks`` loads them too, only commands that
    need run ids alone (``status``, ``submit``) do not.
    """
    from pebench.run import RunOptions
    from pebench.sweep.plan import Selection, plan_sweeps

    selection = Selection(
        tasks=args.tasks,
        budget=args.budget,
        seeds=args.seeds,
        backbone=args.backbone,
        weights=args.weights,
        overrides=dict(args.overrides or []),
        preset=args.preset,
        results_dir=args.results,
    )
    options = options or RunOptions(data_dir=args.data_dir, progress=False)
    load_weights = checks if load_weights is None else load_weights
    return plan_sweeps(
        method_list(args.method), selection, options, load_weights, checks, unprepared_ok
    )


__all__ = ["USER_RESULTS", "add_overrides", "add_selection", "method_list", "plan"]
