"""Look-ups over the suites: tasks, suites, selectors, and what a run's data are.

The built-in families register on first use (:func:`tasks`, :func:`suites`); they import only
:mod:`pebench.datasets.spec`, never this module, so the import graph stays acyclic.

Third-party suites come from the entry-point group ``pebench.suites``, read once, after the
built-ins. The entry point's name is the suite's name and its object is a zero-argument function
returning ``(Suite, [TaskSpec, ...])`` (or that pair itself); each task names its own
:class:`~pebench.datasets.spec.Loader`::

    [project.entry-points."pebench.suites"]
    my_suite = "my_package.suite:my_suite"

A plugin that cannot be imported, returns something else or clashes with a registered name is
refused whole (:func:`~pebench.datasets.spec.check_suite`) and reported, one line in
:data:`problems`; it never hides the other suites.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from pebench.datasets.spec import SUITES, TASKS, Suite, TaskSpec, register_suite
from pebench.registry import RegistryError, entry_point_origin, suggest

#: the entry-point group of third-party suites
SUITE_GROUP = "pebench.suites"
#: what a ``pebench.suites`` entry point may name
PLUGIN_ALLOWED = (
    "a zero-argument function returning (Suite, [TaskSpec, ...]), or that pair, whose suite is "
    "named as the entry point"
)
#: suite entry points refused when read, one line each
problems: list[str] = []
#: suite name -> ``"builtin"`` or the ``dist==version`` of its plugin
_ORIGINS: dict[str, str] = {}
#: entry-point name of a refused plugin -> its problem line
_REFUSED: dict[str, str] = {}
#: (entry-point name, problem line) of every refused plugin, in the order read
_REFUSALS: list[tuple[str, str]] = []

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

        for suite in SUITES.values():
            _ORIGINS.setdefault(suite.name, "builtin")
        _load_plugins()


def _plugin_suite(obj: Any, name: str) -> tuple[Suite, list[TaskSpec]]:
    """The ``(Suite, [TaskSpec, ...])`` an entry point's object gives (called if a function)."""
    if callable(obj):
        obj = obj()
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[0], Suite)):
        raise RegistryError(
            f"gave an object of type {type(obj).__name__!r}; allowed: {PLUGIN_ALLOWED}"
        )
    suite, specs = obj
    if isinstance(specs, (str, bytes)) or not isinstance(specs, Iterable):
        raise RegistryError(
            f"gave tasks of type {type(specs).__name__!r}; allowed: {PLUGIN_ALLOWED}"
        )
    if suite.name != name:
        raise RegistryError(f"gave suite {suite.name!r}, not {name!r}; allowed: {PLUGIN_ALLOWED}")
    return suite, list(specs)


def _refuse(name: str, line: str, keep_name: bool = False) -> None:
    """Record a refused entry point (``keep_name``: its name still means the registered suite)."""
    problems.append(line)
    _REFUSALS.append((name, line))
    if not keep_name:
        _REFUSED.setdefault(name, line)


def _load_plugins() -> None:
    """Register every usable ``pebench.suites`` entry point; refuse and report the others."""
    for ep in metadata.entry_points(group=SUITE_GROUP):
        origin = entry_point_origin(ep)
        source = f"suite entry point {ep.name!r} = {ep.value} ({origin})"
        if ep.name in SUITES:  # never imported: the registered suite is kept
            kept = _ORIGINS.get(SUITES[ep.name].name, "runtime")
            line = f"{source}: duplicate suite name {ep.name!r}: clashes with the {kept} one"
            _refuse(ep.name, line + ", which is kept", keep_name=True)
            continue
        before_suites, before_tasks = dict(SUITES), dict(TASKS)
        try:
            suite, specs = _plugin_suite(ep.load(), ep.name)  # runs the plugin's code
            touched = _touched(before_suites, before_tasks)
            # whatever the plugin did to the registry is undone: a plugin adds its suite only
            # through the checked path below, and never changes what others own
            _restore(before_suites, before_tasks)
            if touched:
                raise RegistryError(
                    f"changed the registered {touched} at import; a suite plugin returns its "
                    f"suite and tasks and changes nothing else ({PLUGIN_ALLOWED})"
                )
            register_suite(suite, specs)  # checked there (check_suite), as built-ins are
        except Exception as err:  # a plugin may raise anything: refused and reported, never fatal
            _restore(before_suites, before_tasks)
            what = str(err) if isinstance(err, RegistryError) else f"{type(err).__name__}: {err}"
            _refuse(ep.name, f"{source}: {' '.join(what.split())}")
            continue
        _ORIGINS[suite.name] = origin


def _touched(suites: dict[str, Suite], tasks: dict[str, TaskSpec]) -> str:
    """What of the registry (as it was: ``suites``, ``tasks``) was replaced or removed since."""
    for name, spec in tasks.items():
        if TASKS.get(name) is not spec:
            return f"task {name!r}"
    for name, suite in suites.items():
        if SUITES.get(name) is not suite:
            return f"suite {name!r}"
    return ""


def _restore(suites: dict[str, Suite], tasks: dict[str, TaskSpec]) -> None:
    """Put the registry back as it was (in place: every module holds these dicts)."""
    SUITES.clear()
    SUITES.update(suites)
    TASKS.clear()
    TASKS.update(tasks)


def suite_origin(name: str) -> str:
    """``"builtin"`` or the ``dist==version`` of the plugin that registered suite ``name``."""
    return _ORIGINS.get(get_suite(name).name, "runtime")


def suite_problems() -> list[str]:
    """The ``pebench.suites`` entry points refused (one line each: which, why, what is allowed)."""
    _ensure_builtin()
    return list(problems)


def refused_suites() -> list[tuple[str, str]]:
    """``(entry-point name, problem line)`` of each refused ``pebench.suites`` entry point."""
    _ensure_builtin()
    return list(_REFUSALS)


def _unknown_task(name: str) -> str:
    """One line for an unknown suite or task: close matches and the suites, not every task id."""
    all_tasks = tasks()
    if (refused := _REFUSED.get(name.split("/", 1)[0].split(":", 1)[0])) is not None:
        return f"unknown suite or task {name!r}: {refused}"
    names = sorted(
        set(suites()) | set(all_tasks) | {a for s in all_tasks.values() for a in s.aliases}
    )
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    unique = sorted({s.name for s in suites().values()})
    return (
        f"unknown suite or task {name!r}.{hint} Suites: {', '.join(unique)} "
        "(`pebench list tasks --suite NAME` lists a suite's tasks)"
    )


def suites() -> dict[str, Suite]:
    """All suites by name (aliases included)."""
    _ensure_builtin()
    return SUITES


def tasks() -> dict[str, TaskSpec]:
    """All tasks by canonical name."""
    _ensure_builtin()
    return TASKS


def get_suite(name: str) -> Suite:
    """A suite by name or alias; unknown names raise with suggestions (or why it was refused)."""
    if name not in suites():
        if name in _REFUSED:
            raise RegistryError(f"unknown suite {name!r}: {_REFUSED[name]}")
        raise RegistryError(suggest(name, suites(), "suite"))
    return SUITES[name]


def get_task(name: str) -> TaskSpec:
    """A task by canonical name or alias; unknown names raise with close matches and suites."""
    all_tasks = tasks()
    if name in all_tasks:
        return all_tasks[name]
    for spec in all_tasks.values():
        if name in spec.aliases:
            return spec
    raise RegistryError(_unknown_task(name))


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
            out.append(get_task(part))  # unknown: close matches and the suites, one line
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


def check_data(
    selection: TaskSpec | Iterable[TaskSpec], data_dir: str | Path | None, image_size: int
) -> None:
    """Check cheaply, before any run, that every split the tasks' runs read is there and whole.

    Each task's :class:`~pebench.datasets.spec.Loader` answers (``check``): for prepared caches,
    every stored split of every role exists with the size and shape its manifest records, so a
    missing or truncated test split stops a sweep before its search trains, not at its finals.

    Raises:
        pebench.datasets.formats.DatasetError: the first missing or damaged split (task, split,
            file, and the command that prepares it again).
    """
    for spec in [selection] if isinstance(selection, TaskSpec) else selection:
        spec.get_loader().check_data(spec, data_dir, image_size)


__all__ = [
    "SUITE_GROUP",
    "check_data",
    "describe_data",
    "get_suite",
    "get_task",
    "problems",
    "refused_suites",
    "resolve_specs",
    "resolve_tasks",
    "suite_origin",
    "suite_problems",
    "suites",
    "tasks",
]
