"""Command-line values: argument types, and the option objects ``pebench run`` builds from them.

Every check that needs no model happens here, before anything is planned: a bad value is one line
(``argparse`` or :class:`pebench.errors.UserError`, exit 2) and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
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
    """Where runs execute (validated: bad combinations and a missing engine fail here)."""
    from pebench.sweep.executors import ExecutorOptions

    opts = ExecutorOptions(
        kind=args.executor,
        max_parallel=args.max_parallel,
        partition=args.partition,
        time_min=args.time_min,
        gpus_per_job=args.gpus_per_job,
        cpus_per_job=args.cpus_per_job,
        log_dir=args.log_dir,
        ray_address=args.ray_address,
        cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run,
        device=args.device,
        runs_per_device=args.runs_per_device,
        nproc_per_run=args.nproc_per_run,
    )
    opts.validate()
    return opts


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


def progress_line(row: dict[str, Any], done: int, total: int) -> str:
    """One line for a run that just finished: what it was, its score, its status and time."""
    if row["phase"] == "search":
        what = f"search trial {row['trial']} lr={row['lr']:g}"
        score = f"val_top1={row['val_top1']:.4f}" if row["status"] == "ok" else ""
    else:
        chosen = f"lr={row['lr']:g} selected" if row["trial"] >= 0 else "no trial selected"
        what = f"final seed={row['seed']} {chosen}"
        score = f"test_top1={row['test_top1']:.4f}" if row["status"] == "ok" else ""
    secs = row.get("wall_time_s")
    took = f" ({secs:.1f} s)" if isinstance(secs, float) and secs == secs else ""
    width = len(str(total))
    return (
        f"[{done:>{width}}/{total}] {row['method']} {row['task']} {what}: {row['status']}"
        f"{' ' + score if score else ''}{took}"
    )


def print_outcome(rows: list[dict[str, Any]], results: str) -> int:
    """One line per final run, one per run not ok (stderr), a summary; returns the exit code."""
    for r in rows:
        if r["phase"] == "final":
            acc = f"test_top1={r['test_top1']:.4f}" if r["status"] == "ok" else ""
            print(
                f"{r['method']:<16} {r['task']:<24} seed={r['seed']} lr={r['lr']:g} "
                f"{r['status']:<8} {acc}"
            )
    bad = [r for r in rows if r["status"] != "ok"]
    for r in bad:
        first = r["error"].splitlines()[0] if r["error"] else ""
        job = f" (job {r['job_id']}, log {r['log_path']})" if r["job_id"] else ""
        print(
            f"{r['method']} {r['task']} {r['phase']} trial={r['trial']} seed={r['seed']}: "
            f"{r['status']}: {first}{job}",
            file=sys.stderr,
        )
    print(
        f"{len(rows)} runs, {len(bad)} not ok; rows in {results}/runs/; "
        f"tables and plots: `pebench leaderboard --results {results}`",
        file=sys.stderr,
    )
    return 0 if not bad else 1


__all__ = [
    "device",
    "executor_options",
    "key_value",
    "print_outcome",
    "progress_line",
    "run_options",
    "seeds",
]
