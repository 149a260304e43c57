"""What commands print and return: progress lines, a sweep's outcome, exit codes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

#: bad input: one ``pebench: error: ...`` line
EXIT_USAGE = 2
#: what a shell reports for a process stopped by SIGINT (128 + 2)
EXIT_INTERRUPTED = 130
#: what a shell reports for a program ended by SIGPIPE (128 + 13)
EXIT_BROKEN_PIPE = 141


def say(prefix: str) -> Callable[[str], None]:
    """A progress printer: one ``prefix: line`` on stderr, flushed at once."""

    def printer(line: str) -> None:
        print(f"{prefix}: {line}", file=sys.stderr, flush=True)

    return printer


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
    "EXIT_BROKEN_PIPE",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "print_outcome",
    "progress_line",
    "say",
]
