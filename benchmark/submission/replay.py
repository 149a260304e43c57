"""The verifier's re-runs, in the process that may import the submitted plugin.

``python -m pebench.submission.replay REQUEST.json`` (run by :mod:`pebench.submission.verify`
with the interpreter of the verification's environment) plans the sweep the archive names
exactly as ``pebench run`` plans it, with the conformance checks (their own fresh process, their
memo in the re-run folder, so nothing is remembered from elsewhere), re-derives every run id of
its grid (the finals from the submitted search rows, by the selection rule), then executes the
sampled runs into the re-run folder, each with the thread count its submitted row records. It
answers with one JSON file: the ``method_source`` the plugin has here, the grid's run ids, and
an error line if planning or the checks failed. The verifier compares; this process judges
nothing.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from pebench.errors import PebenchError
from pebench.run import RunOptions
from pebench.store import RunStore

_THREADS = re.compile(r"x(\d+)threads$")


def threads_of(device: str) -> int | None:
    """The torch thread count a row's ``device`` records (``cpu:x86_64x2threads`` -> 2)."""
    found = _THREADS.search(device or "")
    return int(found.group(1)) if found else None


def replay(request: dict[str, Any]) -> dict[str, Any]:
    """Plan, check, re-derive ids and re-run the sample of ``request`` (see module docstring)."""
    from pebench.sweep.plan import Selection, plan_sweeps
    from pebench.sweep.worker import run_one, start_forkserver

    options = RunOptions(data_dir=request["data_dir"], device="cpu", progress=False)
    selection = Selection(
        tasks=",".join(request["tasks"]),
        budget=request["budget"],
        seeds=request["seeds"],
        backbone=request["backbone"],
        weights=request["weights"],
        overrides=request["overrides"],
        preset=request["preset"],
        results_dir=request["rerun"],
    )
    try:
        (sweep,) = plan_sweeps([request["method"]], selection, options, checks=True)
    except PebenchError as err:
        return {"error": str(err).splitlines()[0] if str(err) else type(err).__name__}
    submitted = RunStore(request["submitted"])
    grid: list[str] = []
    specs = {}
    for task in sweep.tasks:
        search = sweep.search_specs(task)
        rows = [submitted.read(s.run_id) for s in search]
        finals = [] if any(r is None for r in rows) else sweep.after_search(task, rows)[1]
        for spec in search + finals:
            grid.append(spec.run_id)
            specs[spec.run_id] = spec
    start_forkserver()
    ran = []
    for rid in request["sample"]:
        if rid not in specs:
            continue  # the verifier reports it: not a run of this grid
        spec = specs[rid]
        row = submitted.read(rid) or {}
        spec = replace(spec, options=replace(spec.options, threads=threads_of(row.get("device"))))
        run_one(spec, sweep.store, sweep.timeout)
        ran.append(rid)
    return {
        "error": "",
        "method_source": sweep.static["method_source"],
        "grid": grid,
        "ran": ran,
    }


def main(argv: list[str]) -> int:
    """``REQUEST.json`` -> ``<request's answer path>``; exit 0 (the answer says what failed)."""
    request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    answer = replay(request)
    Path(request["answer"]).write_text(json.dumps(answer), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
