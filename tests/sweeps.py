"""Run one planned sweep to the end, as ``pebench run`` does (the tests' shortcut to dispatch)."""

from __future__ import annotations

from typing import Any


def run_sweep(sweep: Any, executor: Any = None) -> list[dict[str, Any]]:
    """Execute ``sweep`` (locally, one run at a time, unless ``executor`` is given).

    Returns every row (search and final) in grid order: per task, its trials, then its finals
    by seed.
    """
    from pebench.sweep.dispatch import dispatch
    from pebench.sweep.executors import LocalExecutor

    if executor is None:
        with LocalExecutor() as local:
            return dispatch([sweep], local)
    return dispatch([sweep], executor)
