"""The task registry: suites, task specs and their loaders (importing this needs no torch).

A :class:`TaskSpec` says everything that defines a task's numbers: classes, split roles, data
format, version (bumped on any change to data, splits or evaluation), and per-task data facts
(known train/test overlap, extra source formats). A :class:`Suite` lists its tasks and how it
aggregates. Each data family defines one :class:`Loader`; tasks reference it as
``"module:attribute"`` and it is imported only when data are actually read.

Layout: :mod:`~pebench.datasets.spec` (types and the raw registry, imported by every family),
:mod:`~pebench.datasets.catalog` (look-ups; loads the built-in families), the families
(:mod:`~pebench.datasets.demo`, :mod:`~pebench.datasets.vtab`, :mod:`~pebench.datasets.fgvc`,
:mod:`~pebench.datasets.fewshot`, :mod:`~pebench.datasets.video_suite`), the readers
(:mod:`~pebench.datasets.formats`, :mod:`~pebench.datasets.sources`,
:mod:`~pebench.datasets.tfds_source`) and the data stores (:mod:`~pebench.datasets.cache`,
:mod:`~pebench.datasets.video`).
"""

from __future__ import annotations

from pebench.datasets.catalog import (
    check_data,
    describe_data,
    get_suite,
    get_task,
    resolve_specs,
    resolve_tasks,
    suites,
    tasks,
)
from pebench.datasets.spec import (
    ROLES,
    SUITES,
    TASKS,
    Loader,
    Suite,
    TaskSpec,
    array_sha256,
    register_suite,
)

__all__ = [
    "ROLES",
    "SUITES",
    "TASKS",
    "Loader",
    "Suite",
    "TaskSpec",
    "array_sha256",
    "check_data",
    "describe_data",
    "get_suite",
    "get_task",
    "register_suite",
    "resolve_specs",
    "resolve_tasks",
    "suites",
    "tasks",
]
