"""The task registry: suites, task specs and their loaders (importing this needs no torch).

A :class:`TaskSpec` says everything that defines a task's numbers: classes, split roles, data
format, version (bumped on any change to data, splits or evaluation). A :class:`Suite` lists its
tasks and how it aggregates. Loaders are referenced as ``"module:function"`` and imported only
when data is actually read.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from pebench.registry import RegistryError, suggest

#: split roles every task maps to its own split names
ROLES = ("train", "val", "trainval", "test")


def array_sha256(images: np.ndarray, labels: np.ndarray, chunk: int = 256) -> str:
    """SHA-256 of the uint8 images (in chunks: memory maps stay on disk) then the int64 labels.

    The one data-identity formula: prepared-cache manifests store it, result rows record its
    first 16 hex digits as ``data_hash``.
    """
    h = hashlib.sha256()
    for i in range(0, len(images), chunk):
        h.update(np.ascontiguousarray(images[i : i + chunk]).tobytes())
    h.update(np.ascontiguousarray(np.asarray(labels, dtype=np.int64)).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class TaskSpec:
    """One classification task.

    Attributes:
        name: canonical id, ``"<suite>/<task>"``.
        suite: suite the task belongs to.
        group: group inside the suite (VTAB: natural / specialized / structured).
        num_classes: number of classes; labels are ``0 .. num_classes - 1``.
        version: bumped whenever data, splits or evaluation change.
        data_format: how the data is stored ("procedural", "noah-jpeg", "tfds", ...).
        splits: role (see :data:`ROLES`) -> split name (e.g. ``"train" -> "train800"``).
        loader: ``"module:function"`` with signature ``(spec, split, data_dir, image_size)``.
        aliases: other names other code bases use for this task.
        description: one line for ``pebench list tasks``.
        sizes: split name -> number of examples (checked on load).
        modality: ``"image"`` (loader returns arrays, see :mod:`pebench.datasets.cache`) or
            ``"video"`` (loader is :func:`pebench.datasets.video.video_split`, a torch Dataset).
    """

    name: str
    suite: str
    group: str
    num_classes: int
    version: str
    data_format: str
    splits: dict[str, str]
    loader: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    sizes: dict[str, int] = field(default_factory=dict)
    modality: str = "image"

    def load_fn(self) -> Callable:
        """Import and return the loader function."""
        module, _, attr = self.loader.partition(":")
        return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Suite:
    """A named set of tasks with its aggregation rule.

    Attributes:
        name: suite id (``"demo"``, ``"vtab"``...).
        tasks: canonical task ids in display order.
        aggregate: ``"mean"`` (plain mean of tasks) or ``"vtab"`` (mean of all tasks and mean of
            group means, both reported).
        default_budget: budget id used when ``--budget`` is not given.
        description: one line for ``pebench list suites``.
        aliases: other names for the suite.
    """

    name: str
    tasks: tuple[str, ...]
    aggregate: Literal["mean", "vtab"]
    default_budget: str
    description: str = ""
    aliases: tuple[str, ...] = ()


TASKS: dict[str, TaskSpec] = {}
SUITES: dict[str, Suite] = {}


def register_suite(suite: Suite, tasks: list[TaskSpec]) -> None:
    """Add a suite and its tasks (names must be new)."""
    for name in [suite.name, *suite.aliases]:
        if name in SUITES:
            raise RegistryError(f"duplicate suite name {name!r}")
    for spec in tasks:
        if spec.name in TASKS:
            raise RegistryError(f"duplicate task name {spec.name!r}")
        if set(spec.splits) != set(ROLES):
            raise ValueError(f"task {spec.name!r} must map exactly the roles {ROLES}")
        TASKS[spec.name] = spec
    for name in [suite.name, *suite.aliases]:
        SUITES[name] = suite


_BUILTIN_LOADED = False


def _ensure_builtin() -> None:
    global _BUILTIN_LOADED
    if not _BUILTIN_LOADED:
        _BUILTIN_LOADED = True
        from pebench.datasets import demo, fewshot, fgvc, video, vtab  # noqa: F401 (registers)


def suites() -> dict[str, Suite]:
    """All suites by name (aliases included)."""
    _ensure_builtin()
    return SUITES


def tasks() -> dict[str, TaskSpec]:
    """All tasks by canonical name."""
    _ensure_builtin()
    return TASKS


def get_suite(name: str) -> Suite:
    """A suite by name or alias; unknown names raise with suggestions."""
    if name not in suites():
        raise RegistryError(suggest(name, suites(), "suite"))
    return SUITES[name]


def get_task(name: str) -> TaskSpec:
    """A task by canonical name or alias; unknown names raise with suggestions."""
    all_tasks = tasks()
    if name in all_tasks:
        return all_tasks[name]
    for spec in all_tasks.values():
        if name in spec.aliases:
            return spec
    names = list(all_tasks) + [a for s in all_tasks.values() for a in s.aliases]
    raise RegistryError(suggest(name, names, "task"))


def _group_tasks(selector: str) -> list[TaskSpec]:
    """Tasks of ``"<suite>:<group>"`` (e.g. ``"vtab:structured"``), in suite order."""
    suite_name, _, group = selector.partition(":")
    suite = get_suite(suite_name)
    specs = [TASKS[t] for t in suite.tasks if TASKS[t].group == group]
    if not specs:
        groups = dict.fromkeys(TASKS[t].group for t in suite.tasks)
        raise RegistryError(suggest(group, groups, f"group of suite {suite.name!r}"))
    return specs


def resolve_tasks(selector: str) -> list[TaskSpec]:
    """Expand ``"demo"``, ``"demo/shapes,demo/texture"``, ``"vtab:structured"`` or a mix.

    ``"<suite>:<group>"`` selects the tasks of one group of a suite. Tasks come back in order,
    each once.
    """
    out: list[TaskSpec] = []
    for part in [p.strip() for p in selector.split(",") if p.strip()]:
        if ":" in part:
            out.extend(_group_tasks(part))
        elif part in suites():
            out.extend(TASKS[t] for t in SUITES[part].tasks)
        else:
            try:
                out.append(get_task(part))
            except RegistryError as err:
                names = sorted(set(suites()) | set(tasks()))
                raise RegistryError(suggest(part, names, "suite or task")) from err
    if not out:
        raise RegistryError(f"no tasks selected by {selector!r}")
    return list({spec.name: spec for spec in out}.values())


def describe_data(spec: TaskSpec, data_dir: str | None, image_size: int) -> tuple[str, str]:
    """``(data_format, data_manifest)`` of the data a run of ``spec`` will read.

    The loader's module may define ``describe(spec, data_dir, image_size)``: prepared caches
    answer from their manifest (a task read from NOAH folders or from TFDS gives different
    values, so the two lineages never mix), the demo suite hashes its generated splits.
    Without it, the task's own format and an empty manifest hash are returned.

    Raises:
        Whatever the loader's ``describe`` raises for missing data (e.g. a cache that was never
        prepared, with the command that prepares it).
    """
    fn = loader_hook(spec, "describe")
    return fn(spec, data_dir, image_size) if fn else (spec.data_format, "")


def loader_hook(spec: TaskSpec, name: str) -> Callable | None:
    """The optional function ``name`` of the module holding ``spec``'s loader, if it has one.

    Hooks a loader module may define (all called as ``(spec, ..., data_dir, image_size)``):
    ``describe`` (see :func:`describe_data`) and ``verified_sha256`` (the
    :func:`array_sha256` of a split the loader has just checked, so callers need not hash it
    again; ``None`` when it does not know).
    """
    return getattr(importlib.import_module(spec.loader.partition(":")[0]), name, None)
