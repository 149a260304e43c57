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
from pebench.datasets.sources import source_of
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
