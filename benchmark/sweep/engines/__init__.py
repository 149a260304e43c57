"""Executor engines by name: the built-in table, then the ``pebench.executors`` entry points.

Each engine is one module holding an :class:`~pebench.sweep.engines.base.Engine` subclass (its
flags, checks, executor and job info); a fourth engine is one more file and one line, here for a
built-in, or ``name = package.module:Class`` under the entry-point group ``pebench.executors``
for a plugin (``pebench run --executor name`` then accepts its flags). The registry is the one
methods use (:class:`pebench.registry.Registry`, lazy built-ins).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from typing_extensions import override

from pebench.registry import Registry, RegistryError, check_named_subclass
from pebench.sweep.engines.base import Engine, ExecutorError, Place, at_least

#: the built-in engines, in the order ``pebench run --help`` lists them: name -> class
BUILTINS = {
    "local": "pebench.sweep.engines.local:LocalEngine",
    "slurm": "pebench.sweep.engines.slurm:SlurmEngine",
    "ray": "pebench.sweep.engines.ray:RayEngine",
}


class EngineRegistry(Registry["type[Engine]"]):
    """The executor engines; each entry must be an :class:`Engine` subclass of its own name."""

    @override
    def check(self, name: str, obj: object, source: str) -> None:
        """An engine entry must be an :class:`Engine` subclass whose ``name`` is ``name``.

        Raises:
            RegistryError: one line naming the entry, what it is and what is allowed.
        """
        check_named_subclass(obj, Engine, name, source)


registry: EngineRegistry = EngineRegistry("executor", BUILTINS, group="pebench.executors")


def names() -> list[str]:
    """The usable engine names: the built-ins in their order, then plugins by name."""
    plugins = [n for n in registry.names() if n not in BUILTINS]
    return [*BUILTINS, *sorted(plugins)]


def engines() -> list[type[Engine]]:
    """Every engine that loads, in :func:`names` order (a broken plugin is left out)."""
    found = []
    for name in names():
        try:
            found.append(registry.get(name))
        except RegistryError:
            continue
    return found


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """``--executor`` and every engine's own flags (each flag once, in engine order)."""
    seen: set[str] = set()
    group.add_argument("--executor", default="local", choices=names())
    group.add_argument(
        "--max-parallel",
        type=int,
        help="concurrent runs: local (default one per GPU, or one per CPU core up to 8, each "
        "with its share of the threads), Slurm array parallelism, "
        "or the size of a Ray started here (x --cpus-per-run CPUs)",
    )
    for engine in engines():
        engine.add_arguments(group, seen)


def configure(kind: str, place: Place, given: Mapping[str, Any]) -> Engine:
    """The engine ``kind`` with its options taken from ``given`` (flag dests), validated.

    Args:
        kind: the ``--executor`` value.
        place: what every engine gets (parallelism, device, processes per run).
        given: the parsed arguments (other keys are ignored); ``None`` means not given.

    Raises:
        ExecutorError: an unknown engine, another engine's flag (one line naming the engine it
            applies to), a bad value or combination, or a missing engine package.
    """
    if kind not in registry.names():
        raise ExecutorError(f"--executor {kind!r} unknown; choose one of {tuple(names())}")
    try:
        chosen = registry.get(kind)
    except RegistryError as err:  # a plugin engine that does not load
        raise ExecutorError(str(err)) from err
    own = {f.name for f in chosen.flags()}
    for other in engines():
        for f in other.flags():
            if f.name not in own and given.get(f.name) is not None:
                owners = " or ".join(e.name for e in engines() if _declares(e, f.name))
                raise ExecutorError(
                    f"{f.metadata['flag']} applies to --executor {owners} only, not {kind}"
                    f"{f.metadata['elsewhere']}"
                )
    at_least("--max-parallel", place.max_parallel, 1)
    engine = chosen(place=place, **{name: given.get(name) for name in own})
    engine.validate()
    return engine


def options(
    kind: str = "local",
    max_parallel: int | None = None,
    device: str = "auto",
    nproc_per_run: int = 1,
    **given: Any,
) -> Engine:
    """:func:`configure` from keywords: the common values, then any engine's flags by dest.

    ``options("slurm", partition="gpu", time_min=30)`` is what ``pebench run --executor slurm
    --partition gpu --time-min 30`` builds.

    Raises:
        ExecutorError: as :func:`configure`.
    """
    return configure(kind, Place(max_parallel, device, nproc_per_run), given)


def _declares(engine: type[Engine], name: str) -> bool:
    return any(f.name == name for f in engine.flags())


def job_info(kind: str) -> tuple[str, str]:
    """``(job_id, log_path)`` of the ``kind`` job the calling worker runs in."""
    return registry.get(kind).job_info()


__all__ = [
    "BUILTINS",
    "Engine",
    "ExecutorError",
    "Place",
    "add_arguments",
    "configure",
    "engines",
    "job_info",
    "names",
    "options",
    "registry",
]
