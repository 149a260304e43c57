"""Where a task's cache lives and which stored splits each of its roles reads.

A task's cache is ``<cache_dir>/<suite>/<dataset>/<S>px`` (:func:`cache_path`): the **unit**
(:func:`unit_name`) is the first two parts of its id, so few-shot tasks of one dataset share a
folder. A split name is one stored split or several joined by ``+`` (:func:`components`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pebench.datasets.cache_errors import CacheError
from pebench.datasets.sources import source_for, source_of
from pebench.datasets.spec import TaskSpec


def default_cache_dir() -> Path:
    """``$PEBENCH_CACHE`` if set, else ``~/.cache/pebench``."""
    env = os.environ.get("PEBENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pebench"


def unit_name(spec: TaskSpec) -> str:
    """Cache unit of a task: ``<suite>/<dataset>`` (the first two parts of its id).

    Raises:
        CacheError: an id without a ``/``.
    """
    parts = spec.name.split("/")
    if len(parts) < 2:
        raise CacheError(f"task {spec.name!r}: cached tasks need ids like '<suite>/<dataset>'")
    return "/".join(parts[:2])


def cache_path(cache_dir: str | Path, spec: TaskSpec, image_size: int) -> Path:
    """Folder holding ``spec``'s arrays at ``image_size``."""
    return Path(cache_dir) / unit_name(spec) / f"{int(image_size)}px"


def components(split: str) -> list[str]:
    """Stored splits making up a split name (``"train+val"`` is the two concatenated)."""
    return split.split("+")


def _role_parts(spec: TaskSpec, roles: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(c for r in roles for c in components(spec.splits[r])))


def _train_side(spec: TaskSpec) -> list[str]:
    return [s for s in _role_parts(spec, ("train", "val", "trainval")) if s not in _test(spec)]


def _test(spec: TaskSpec) -> list[str]:
    return _role_parts(spec, ("test",))


def _prepare_command(spec: TaskSpec, cache_dir: Path, image_size: int) -> str:
    others = [source_of(f) for f in spec.data_formats[1:]]
    return (
        f"pebench prepare {spec.name} --source {source_of(spec.data_format)} --data-dir "
        f"<raw data folder> --cache-dir {cache_dir} --image-size {image_size}"
        + (f" (other sources: {', '.join(others)})" if others else "")
    )


def _raw_source(specs: Iterable[TaskSpec], folder: Path) -> tuple[str, TaskSpec] | None:
    """The ``--source`` and task of the first of ``specs`` whose raw data ``folder`` holds.

    A raw data folder given where a cache folder is expected (``pebench run --data-dir``).
    """
    for spec in specs:
        for data_format in spec.data_formats:
            source = source_for(data_format)
            if source is not None and source.present(spec, folder):
                return source.name, spec
    return None


def _raw_advice(spec: TaskSpec, folder: Path, source: str, image_size: int) -> str:
    """What to do with a raw data ``folder`` (holding ``spec``'s) given as a cache folder."""
    return (
        f"{folder} holds raw {source} data (a folder of {unit_name(spec)}), not a prepared "
        f"cache: the --data-dir of pebench run is the cache folder. Prepare it with: pebench "
        f"prepare {spec.suite} --source {source} --data-dir {folder} --cache-dir <cache folder> "
        f"--image-size {image_size}, then pass --data-dir <cache folder>"
    )
