"""Result rows for report tests: two small test suites, valid rows, and a Markdown table reader.

Suites are passed explicitly (``REG``: ``suites=``/``tasks=``) so the global registry is never
mutated; a test that needs the global path registers :data:`LB` in a fresh process
(``import report_rows``).
"""

from __future__ import annotations

import json
from pathlib import Path

from pebench import results
from pebench.datasets import Suite, TaskSpec
from pebench.store import RunStore

SPLITS = {"train": "train", "val": "val", "trainval": "trainval", "test": "test"}


def _spec(name: str, group: str, version: str = "1") -> TaskSpec:
    suite = name.split("/")[0]
    return TaskSpec(name, suite, group, 10, version, "procedural", SPLITS, "x:y")


LB_TASKS = [_spec("lbtest/alpha", "g"), _spec("lbtest/beta", "g")]
LB = Suite("lbtest", ("lbtest/alpha", "lbtest/beta"), "mean", "b1", "two test tasks")
VT_TASKS = [
    _spec("lbvtab/nat1", "natural"),
    _spec("lbvtab/spe1", "specialized"),
    _spec("lbvtab/str1", "structured"),
    _spec("lbvtab/str2", "structured"),
]
VT = Suite("lbvtab", tuple(t.name for t in VT_TASKS), "vtab", "b1")
SUITES = {"lbtest": LB, "lbvtab": VT}
TASKS = {t.name: t for t in LB_TASKS + VT_TASKS}
REG = {"suites": SUITES, "tasks": TASKS}


def make_row(**over) -> dict:
    """A complete, valid result row; ``over`` replaces fields; run_id computed last."""
    task = over.get("task", "lbtest/alpha")
    row = {
        "phase": "final",
        "trial": 0,
        "lr": 0.001,
        "weight_decay": 0.0001,
        "method": "lora",
        "preset": "default",
        "method_config": json.dumps({"r": 8}),
        "method_origin": "builtin",
        "method_reconstruction": False,
        "backbone": "vit_base_patch16_224",
        "weights": "orig_in21k",
        "task": task,
        "suite": task.split("/")[0],
        "task_group": TASKS[task].group if task in TASKS else "g",
        "task_version": TASKS[task].version if task in TASKS else "1",
        "data_format": "procedural",
        "data_hash": "abc",
        "data_manifest": "m1",
        "budget": "b1",
        "seed": 0,
        "test_top1": 0.5,
        "val_top1": 0.5,
        "train_loss": 0.7,
        "params_method": 294912,
        "params_head": 7690,
        "params_backbone": 85798656,
        "params_inference_extra": 0,
        "flops_per_image": 1.0e9,
        "peak_mem_bytes": 100.0 * 1024**2,
        "peak_mem_kind": "cpu_rss",
        "train_images_per_s": 10.0,
        "eval_images_per_s": 30.0,
        "train_time_s": 1.0,
        "wall_time_s": 2.0,
        "checkpoint_bytes": 1000.0,
        "created_at": "2025-01-01T00:00:00Z",
        "pebench_version": "0.1.0",
        "method_source": "5ea7c0de5ea7c0de",
        "git_sha": "deadbeef",
        "git_dirty": False,
        "python_version": "3.11",
        "torch_version": "2.4",
        "timm_version": "1.0",
        "device": "cpu",
        "status": "ok",
        "error": "",
    }
    row.update(over)
    row["run_id"] = results.run_id(row)
    return row


def write(tmp: Path, **over) -> dict:
    row = make_row(**over)
    RunStore(tmp).record(row)
    return row


def _parse_table(md: str, heading: str) -> list[dict[str, str]]:
    """The first markdown table after ``heading``, as dicts keyed by column header."""
    lines = md.splitlines()
    start = lines.index(heading)
    i = next(k for k in range(start, len(lines)) if lines[k].startswith("| method"))
    header = [c.strip() for c in lines[i].strip("|").split("|")]
    out = []
    for line in lines[i + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        out.append(dict(zip(header, cells, strict=True)))
    return out


def table(md: str, suite: str) -> list[dict[str, str]]:
    return _parse_table(md, f"## {suite}")


def status_table(md: str, suite: str) -> list[dict[str, str]]:
    return _parse_table(md, f"### {suite}: runs")


def by_method(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {r["method"]: r for r in rows}
