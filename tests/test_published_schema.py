"""What rows and tasks already published rely on: the row schema grows only, task versions stay.

A row file names its columns in its header, so a column may be added (listed in
``results.ADDED_COLUMNS``: rows written before it still read) but never removed, renamed or
retyped, or every older row stops parsing or changes meaning. A task's ``(id, version)`` is part
of each run's identity: changing what a published version means (instead of naming a new one)
would relabel old rows, and removing one orphans them. New tasks and versions are added to the
pins below with the change that introduces them.
"""

import hashlib
import json

from pebench import results as R
from pebench.datasets.catalog import tasks

#: every column and its type, as published
PUBLISHED_SCHEMA = {
    "run_id": "str",
    "phase": "str",
    "trial": "int",
    "lr": "float",
    "weight_decay": "float",
    "method": "str",
    "preset": "str",
    "method_config": "str",
    "method_origin": "str",
    "method_source": "str",
    "method_reconstruction": "bool",
    "checks": "str",
    "backbone": "str",
    "weights": "str",
    "task": "str",
    "suite": "str",
    "task_group": "str",
    "task_version": "str",
    "data_format": "str",
    "data_hash": "str",
    "data_manifest": "str",
    "data_skipped": "count",
    "budget": "str",
    "seed": "int",
    "replicate": "count",
    "test_top1": "frac",
    "val_top1": "frac",
    "n_test": "count",
    "n_test_correct": "count",
    "n_val": "count",
    "n_val_correct": "count",
    "selection_grid": "str",
    "selection_edge": "str",
    "selection_rule": "str",
    "train_loss": "float",
    "params_method": "count",
    "params_head": "count",
    "params_backbone": "count",
    "params_inference_extra": "count",
    "flops_per_image": "float",
    "train_flops_per_image": "float",
    "peak_mem_bytes": "float",
    "peak_mem_kind": "str",
    "train_images_per_s": "float",
    "eval_images_per_s": "float",
    "train_time_s": "float",
    "data_time_s": "float",
    "mfu": "float",
    "train_images_per_s_steady": "float",
    "first_epoch_s": "float",
    "data_resident": "str",
    "device_runs": "count",
    "compile": "str",
    "wall_time_s": "float",
    "checkpoint_bytes": "float",
    "created_at": "str",
    "pebench_version": "str",
    "git_sha": "str",
    "git_dirty": "bool",
    "python_version": "str",
    "torch_version": "str",
    "timm_version": "str",
    "device": "str",
    "executor": "str",
    "job_id": "str",
    "log_path": "str",
    "record_sha256": "str",
    "attempt": "count",
    "status": "str",
    "error": "str",
}
#: SHA-256 (16 hex) of the sorted (task id, version) pairs of the built-in tasks, as published
PUBLISHED_TASKS = "a15b9aac783bcacd"


def test_columns_are_never_removed_renamed_or_retyped():
    changed = {c: (t, R.SCHEMA.get(c)) for c, t in PUBLISHED_SCHEMA.items() if R.SCHEMA.get(c) != t}
    assert not changed, f"published columns changed (published, now): {changed}"


def test_a_new_column_is_an_added_column():
    new = set(R.SCHEMA) - set(PUBLISHED_SCHEMA)
    assert new <= set(R.ADDED_COLUMNS), f"new columns missing from ADDED_COLUMNS: {sorted(new)}"


def test_published_task_versions_stay():
    pairs = sorted((t.name, t.version) for t in tasks().values())
    digest = hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]
    assert digest == PUBLISHED_TASKS, (
        "a built-in task id or version changed: give changed data a new version and pin it here"
    )
