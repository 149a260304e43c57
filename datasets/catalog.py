"""Look-ups over the built-in suites: tasks, suites, selectors, and what a run's data are.

The built-in families register on first use (:func:`tasks`, :func:`suites`); they import only
:mod:`pebench.datasets.spec`, never this module, so the import graph stays acyclic.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pebench.datasets.spec import SUITES, TASKS, Suite, TaskSpec
from pebench.registry import RegistryError, suggest

_BUILTIN_LOADED = False


def _ensure_builtin() -> None:
    global _BUILTIN_LOADED
    if not _BUILTIN_LOADED:
        _BUILTIN_LOADED = True
        # importing a family registers its suite (each imports only pebench.datasets.spec)
        import pebench.datasets.demo
        import pebench.datasets.fewshot
        import pebench.datasets.fgvc
        import pebench.datasets.video_suite
        import pebench.datasets.vtab  # noqa: F401


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


def resolve_specs(selection: str | TaskSpec | Iterable[TaskSpec | str]) -> list[TaskSpec]:
    """Specs of a selector (as :func:`resolve_tasks`), one spec, or a mix of specs and names."""
    if isinstance(selection, TaskSpec):
        return [selection]
    if isinstance(selection, str):
        return resolve_tasks(selection)
    return [s if isinstance(s, TaskSpec) else get_task(s) for s in selection]


def describe_data(spec: TaskSpec, data_dir: str | Path | None, image_size: int) -> tuple[str, str]:
    """``(data_format, data_manifest)`` of the data a run of ``spec`` will read.

    Answered by the task's :class:`~pebench.datasets.spec.Loader` (``describe``): prepared
    caches answer from their manifest (a task read from NOAH folders or from TFDS gives different
    values, so the two lineages never mix), the demo suite hashes its generated splits. A loader
    without ``describe`` gives the task's own format and an empty manifest hash.

    Raises:
        Whatever the loader's ``describe`` raises for missing data (e.g. a cache that was never
        prepared, with the command that prepares it).
    """
    return spec.get_loader().data_identity(spec, data_dir, image_size)


__all__ = [
    "describe_data",
    "get_suite",
    "get_task",
    "resolve_specs",
    "resolve_tasks",
    "suites",
    "tasks",
]
