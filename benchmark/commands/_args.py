"""Command-line values: argument types, and the option objects ``pebench run`` builds from them.

A shared helper of the command modules (:mod:`pebench.commands`).

Every check that needs no model happens here, before anything is planned: a bad value is one line
(``argparse`` or :class:`pebench.errors.UserError`, exit 2) and nothing is written.
"""

from __future__ import annotations

import argparse
from typing import Any

from pebench.errors import UserError


def seeds(text: str) -> list[int]:
    """``--seeds 0,1,2``: distinct integers (an empty list or a repeated seed is refused)."""
    try:
        out = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"--seeds expects integers like 0,1,2; got {text!r}"
        ) from err
    if not out or len(set(out)) < len(out):
        raise argparse.ArgumentTypeError(
            f"--seeds expects distinct integers like 0,1,2; got {text!r}"
        )
    if any(abs(s) > SEED_MAX for s in out) or len(out) > 1000:
        raise argparse.ArgumentTypeError(
            f"--seeds expects at most 1000 integers within +-{SEED_MAX} (torch's seed range for "
            f"every rank and worker); got {text!r}"
        )
    return out


#: the largest seed pebench accepts (seeds are combined per rank and epoch within int64)
SEED_MAX = 2**31 - 1


def device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; a CUDA device must exist here."""
    name, _, index = text.partition(":")
    if text not in ("auto", "cpu", "cuda") and not (name == "cuda" and index.isdigit()):
        raise argparse.ArgumentTypeError(
            f"--device expects auto, cpu, cuda or cuda:N; got {text!r}"
        )
    if name == "cuda":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(index or 0) >= count:
            raise argparse.ArgumentTypeError(
                f"--device {text}: this machine has {count} CUDA device(s); use auto or cpu"
            )
    return text


def key_value(text: str) -> tuple[str, str]:
    """``--set KEY=VALUE`` -> ``(KEY, VALUE)``; values are parsed by the method's Config."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def executor_options(args: argparse.Namespace) -> Any:
    """Where runs execute: the ``--executor`` engine with its own options, validated.

    Bad combinations (another engine's flag), bad values and a missing engine package fail here
    (:func:`pebench.sweep.engines.configure`).
    """
    from pebench.sweep.engines import Place, configure

    place = Place(
        max_parallel=args.max_parallel, device=args.device, nproc_per_run=args.nproc_per_run
    )
    return configure(args.executor, place, vars(args))


def run_options(args: argparse.Namespace) -> Any:
    """How every run of this invocation executes (one object, carried to each run)."""
    from pebench.run import RunOptions

    if args.nproc_per_run < 1:
        raise UserError(f"--nproc-per-run must be >= 1, got {args.nproc_per_run}")
    if args.data_workers < 0:
        raise UserError(f"--data-workers must be >= 0, got {args.data_workers}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    if args.timeout is not None and not args.timeout > 0:
        raise UserError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    from pebench.runlog import check_trackers

    trackers = tuple(t.strip() for t in args.log_to.split(",") if t.strip())
    check_trackers(trackers)
    return RunOptions(
        data_dir=args.data_dir,
        device=args.device,
        threads=args.threads,
        nproc=args.nproc_per_run,
        data_workers=args.data_workers,
        progress=not args.quiet,
        timeout_s=args.timeout,
        compile=args.compile,
        trackers=trackers,
        epoch_val=args.epoch_val,
        keep_state=args.keep_state,
        device_share=0.5 / max(1, args.runs_per_device or 1),
    )


__all__ = [
    "device",
    "executor_options",
    "key_value",
    "run_options",
    "seeds",
]
