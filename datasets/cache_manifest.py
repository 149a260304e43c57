"""The ``manifest.json`` of a cache folder: its entries, its schema, reading and checking it.

The manifest records what a folder holds (one entry per stored split: size, shape, hashes,
provenance; one per task: its spec facts, the stored splits it reads, its train/test overlap
record) and is the contract between the writer (:mod:`pebench.datasets.cache_prepare`) and the
reader (:func:`pebench.datasets.cache.load`). :func:`_read_manifest` refuses one that is not
JSON or has a field of the wrong type (:class:`ManifestError`, naming the file and field).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from pebench.datasets.cache_errors import ManifestError
from pebench.datasets.sources import SourceSplit
from pebench.datasets.spec import TaskSpec, array_sha256

SCHEMA = "pebench-cache-1"


# ---------------------------------------------------------------------------- hashing --
def _sha(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def _overlap(side: dict[str, np.ndarray], test: np.ndarray) -> tuple[int, list[str]]:
    """Test images whose digest also occurs in a training-side split, with a few examples."""
    if not side or not len(test):
        return 0, []
    where: dict[bytes, str] = {}
    for name, dig in side.items():
        for i, d in enumerate(dig):
            where.setdefault(d.tobytes(), f"{name}[{i}]")
    hits = [(i, where[d.tobytes()]) for i, d in enumerate(test) if d.tobytes() in where]
    return len(hits), [f"test[{i}] == {src}" for i, src in hits[:3]]


# ---------------------------------------------------------------------------- entries --
def _split_entry(sl: SourceSplit, out_dir: Path, data_dir: Path, num_classes: int) -> dict:
    images = np.load(out_dir / f"{sl.name}.images.npy", mmap_mode="r")
    labels = sl.labels.astype(np.int64)
    return {
        "size": len(labels),
        "shape": list(images.shape),
        **sl.provenance(data_dir),
        "label_min": int(labels.min()) if len(labels) else None,
        "label_max": int(labels.max()) if len(labels) else None,
        "classes_present": int(len(np.unique(labels))),
        "class_counts": np.bincount(labels, minlength=num_classes).tolist(),
        "unique_images": sl.unique_images(),
        "sha256": array_sha256(images, labels),
        "labels_sha256": _sha(labels),
        "digests_sha256": _sha(np.load(out_dir / f"{sl.name}.digests.npy")),
        "notes": list(sl.notes),
    }


#: what a cache prepared with ``--nonstandard-sizes`` appends to its data format: the manifest,
#: ``describe`` and so every row's ``data_format`` (part of the run identity and of the
#: leaderboard's row key) say so, and such data never mixes with the standard lineage
NONSTANDARD = "+nonstandard-sizes"


def recorded_format(data_format: str, nonstandard_sizes: bool) -> str:
    """The data format a cache records: the source's, marked when the sizes are non-standard."""
    return data_format + NONSTANDARD if nonstandard_sizes else data_format


def base_format(data_format: str) -> str:
    """The source's data format of a recorded one (the mark removed)."""
    return data_format.removesuffix(NONSTANDARD)


def is_nonstandard(data_format: str) -> bool:
    """Whether a recorded data format marks non-standard split sizes."""
    return data_format.endswith(NONSTANDARD)


def _task_entry(
    spec: TaskSpec, data_format: str, sizes: dict[str, int] | None = None
) -> dict[str, Any]:
    """A task's manifest entry; ``sizes``: the listed sizes of a non-standard cache."""
    return {
        "version": spec.version,
        "data_format": data_format,
        "num_classes": spec.num_classes,
        "splits": dict(sorted(spec.splits.items())),
        "sizes": dict(sorted((sizes if sizes is not None else spec.sizes).items())),
    }


def _manifest(
    unit: str,
    data_format: str,
    image_size: int,
    resize: str,
    data_dir: Path,
    source_info: dict[str, Any],
    entries: dict[str, dict],
    kept: dict[str, dict],
) -> dict[str, Any]:
    """A unit's ``manifest.json`` content."""
    from PIL import __version__ as pil_version

    import pebench

    return {
        "schema": SCHEMA,
        "unit": unit,
        "data_format": data_format,
        "image_size": image_size,
        "resize": resize,
        "source_dir": str(data_dir.resolve()),
        **({"source": source_info["reader"]} if "reader" in source_info else {}),
        "pebench_version": pebench.__version__,
        "pillow_version": pil_version,
        "numpy_version": np.__version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "splits": entries,
        "tasks": dict(sorted(kept.items())),
    }


# ------------------------------------------------------------------ schema, reading --
#: the manifest fields readers rely on, with their types: ``[t]`` a list of ``t``, ``{str: t}``
#: a mapping to ``t``, a dict the fields of an object; ``splits`` / ``tasks`` describe each entry
_FIELDS: dict[str, Any] = {
    "schema": str,
    "unit": str,
    "data_format": str,
    "image_size": int,
    "resize": str,
    "splits": {
        "size": int,
        "shape": [int],
        "sha256": str,
        "digests_sha256": str,
        "notes": [str],
    },
    "tasks": {
        "version": str,
        "data_format": str,
        "num_classes": int,
        "splits": {str: str},
        "sizes": {str: int},
        "splits_stored": [str],
        "overlap": {"count": int, "allowed": str, "examples": [str]},
    },
}
#: fields of a split entry holding the source identity (one of them, as a hex string)
_IDENTITY = ("list_sha256", "source_sha256")
_KIND = {int: "an integer", str: "a string", dict: "an object", list: "a list"}


def _kind_ok(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _check_fields(value: Any, rule: Any, where: str) -> str | None:
    """The first field of ``value`` breaking ``rule`` (see :data:`_FIELDS`), in words."""
    if isinstance(rule, type):
        ok = _kind_ok(value, rule)
        return None if ok else f"{where} is {value!r}, expected {_KIND[rule]}"
    if isinstance(rule, list):
        if not isinstance(value, list):
            return f"{where} is {value!r}, expected a list"
        bad = (_check_fields(v, rule[0], f"{where}[{i}]") for i, v in enumerate(value))
        return next((b for b in bad if b), None)
    if not isinstance(value, dict):
        return f"{where} is {value!r}, expected an object"
    if str in rule:  # a mapping: every value follows one rule
        bad = (_check_fields(v, rule[str], f"{where}.{k}") for k, v in value.items())
        return next((b for b in bad if b), None)
    for key, sub in rule.items():
        if key not in value:
            return f"{where}.{key} is missing" if where else f"{key} is missing"
        if found := _check_fields(value[key], sub, f"{where}.{key}" if where else key):
            return found
    return None


def _validate(m: Any) -> str | None:
    """What is wrong with a parsed manifest, in words (``None``: usable)."""
    if not isinstance(m, dict):
        return f"it holds {type(m).__name__}, not an object"
    if m.get("schema") != SCHEMA:
        return f"schema is {m.get('schema')!r}, expected {SCHEMA!r}"
    top = {k: v for k, v in _FIELDS.items() if k not in ("splits", "tasks")}
    if found := _check_fields(m, top, ""):
        return found
    for part in ("splits", "tasks"):
        if part not in m:
            return f"{part} is missing"
        if not isinstance(m[part], dict):
            return f"{part} is {m[part]!r}, expected an object"
        for name, entry in m[part].items():
            if found := _check_fields(entry, _FIELDS[part], f"{part}.{name}"):
                return found
    for name, entry in m["splits"].items():
        ident = [entry.get(k) for k in _IDENTITY if k in entry]
        if not ident or not all(isinstance(v, str) for v in ident):
            return f"splits.{name} has no list_sha256 or source_sha256 string"
    return None


def _read_manifest(folder: Path) -> dict | None:
    """The manifest of a cache folder; ``None`` when the folder has none.

    Raises:
        ManifestError: unreadable, not JSON, another schema or a field of the wrong type (names
            the file and the field).
    """
    path = folder / "manifest.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ManifestError(f"{path} cannot be read ({err})") from err
    try:
        m = json.loads(text)
    except ValueError as err:
        raise ManifestError(f"{path} is not valid JSON ({err})") from err
    if problem := _validate(m):
        raise ManifestError(f"{path} is damaged: {problem}")
    return m


def _reusable_manifest(folder: Path) -> dict | None:
    """The manifest a prepare may build on: ``None`` when missing or damaged."""
    try:
        return _read_manifest(folder)
    except ManifestError:
        return None  # nothing in a damaged cache can be trusted: it is rebuilt and replaced


def _stored_identity(entry: dict | None) -> str | None:
    """The source identity a manifest split entry was written from (list or source hash)."""
    if entry is None:
        return None
    return entry.get("list_sha256") or entry.get("source_sha256")


def _reused(old: dict | None, name: str, sl: SourceSplit) -> bool:
    """Whether split ``name`` of the old cache was written from the same source as ``sl``."""
    prev = (old or {}).get("splits", {}).get(name)
    return prev is not None and _stored_identity(prev) == sl.identity()
