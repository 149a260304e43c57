"""Prepared caches: prepare decodes source images once into uint8 arrays, load checks them.

``pebench prepare`` (:func:`prepare`) reads a source format (:mod:`pebench.datasets.formats`,
or TFDS builders through :mod:`pebench.datasets.tfds_source`), decodes every image once with
PIL (RGB, **direct bicubic resize** to ``S × S``, as NOAH-format consumers do with
``Resize((S, S), bicubic)``; TFDS images arrive decoded by TFDS and get the same PIL resize, so
only the upstream pixels differ), and writes one folder per dataset and image size::

    <cache_dir>/<suite>/<dataset>/<S>px/
        manifest.json                  sizes, label stats, hashes, checks, provenance
        <split>.images.npy             uint8 (N, S, S, 3), read back with mmap_mode="r"
        <split>.labels.npy             int64 (N,)
        <split>.digests.npy            uint8 (N, 16): hash of each decoded source image

``<dataset>`` is the second part of the task id (``vtab/cifar`` -> ``vtab/cifar``,
``fewshot/oxford_pets/shot16/seed0`` -> ``fewshot/oxford_pets``), so few-shot tasks of one dataset
share its val and test arrays. A folder appears complete or not at all: it is written under a
temporary name (``.tmp-<S>px-*``, its blocks reserved before anything is written, so a full disk
is one clear error and never a ``SIGBUS``) and renamed into place; the cache it replaces is first
renamed to ``.old-<S>px-*``, where readers find it until the new one is in place, so a prepare
killed at any point leaves the old or the new cache readable. One prepare at a time writes a unit
(``<suite>/<dataset>/.lock``, an ``flock``); it first puts back an ``.old-*`` copy a killed
prepare left without its ``<S>px`` and removes every other ``.tmp-*`` / ``.old-*`` folder.
Free space is checked against the bytes to write before anything is written.

A folder holds one data format (``manifest.json`` ``data_format``): VTAB-1k can come from NOAH
JPEGs (``noah-jpeg``) or TFDS (``tfds``), two lineages that give different numbers, so preparing a
folder from the other format is refused unless ``force`` replaces it; :func:`describe` tells a
runner which one a task reads.

The tasks' loader (:func:`load`) reads this cache: the ``data_dir`` a runner passes to it (``pebench
run --data-dir``) is the **cache** folder (``--cache-dir`` of ``pebench prepare``), not the raw
data; ``None`` means :func:`default_cache_dir`. A missing cache raises :class:`CacheMissingError`
with the ``pebench prepare`` command to run (for a raw data folder given instead: the command
preparing it into a cache folder, and to pass that one).

Checks, at prepare and again at load: split sizes against the task spec, labels in
``0..C-1`` (and, at prepare, every class present in the dataset; exactly ``k`` images per class in
a ``k``-shot list; ``train800val200`` exactly ``train800`` then ``val200``, labels and decoded
images; every image inside its task folder, symlinks resolved), no image shared between the
training-side splits and the test split (by decoded-pixel hash; inherent duplicates are allowed
only for tasks declaring ``TaskSpec.known_overlap`` or with ``allow_overlap``, and recorded), and
at load the SHA-256 of every array against the manifest. Failures raise :class:`CacheError`
naming task, split and what differs; a damaged ``manifest.json`` (not JSON, a field of the wrong
type) raises :class:`ManifestError` naming the file and field, never "no prepared cache". Before
a sweep's first run, :func:`check_splits` compares every split file's header and byte size with
the manifest (cheap: no hashing), so a missing or truncated split stops the sweep before
anything trains.

The cache is split by job; this module is its entry point (:func:`prepare`, and the tasks'
loader with its checks). :mod:`~pebench.datasets.cache_layout` says where a task's cache lives and
which stored splits it reads; :mod:`~pebench.datasets.cache_manifest` holds the manifest's entries,
schema and reading (the contract between writer and reader); :mod:`~pebench.datasets.cache_store`
the folder mechanics (atomic install, litter of killed prepares, lock, disk space);
:mod:`~pebench.datasets.cache_decode` decodes images into arrays;
:mod:`~pebench.datasets.cache_prepare` is the prepare pipeline (all units or none); and
:mod:`~pebench.datasets.cache_errors` the errors. The source readers live in
:mod:`pebench.datasets.sources` and :mod:`pebench.datasets.formats`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from pebench.datasets.cache_errors import CacheError, CacheMissingError, ManifestError
from pebench.datasets.cache_layout import (
    _prepare_command,
    _raw_advice,
    _raw_source,
    _role_parts,
    _test,
    _train_side,
    cache_path,
    components,
    default_cache_dir,
    unit_name,
)
from pebench.datasets.cache_manifest import (
    _overlap,
    _read_manifest,
    _sha,
    _task_entry,
    base_format,
    is_nonstandard,
)
from pebench.datasets.cache_prepare import (
    UnitReport,
    _check_formats,
    _check_present,
    _prepare_units,
    _source,
    _source_options,
)
from pebench.datasets.cache_store import _installed, _sizes
from pebench.datasets.catalog import get_task, resolve_specs
from pebench.datasets.sources import RESIZE, RESIZE_ARRAYS, SourceOptions
from pebench.datasets.spec import ROLES, Loader, TaskSpec, array_sha256
from pebench.registry import RegistryError


# ---------------------------------------------------------------------------- prepare --
def prepare(
    suite_or_tasks: str | TaskSpec | Iterable[TaskSpec | str],
    source: str,
    data_dir: str | Path,
    cache_dir: str | Path | None = None,
    image_size: int = 224,
    *,
    force: bool = False,
    allow_overlap: bool = False,
    workers: int | None = None,
    progress: bool = False,
    manual_dir: str | Path | None = None,
    download: bool = False,
    nonstandard_sizes: bool = False,
) -> list[UnitReport]:
    """Decode a suite's (or some tasks') images once into a checked cache.

    Args:
        suite_or_tasks: a selector as for ``pebench run --tasks`` (``"vtab"``,
            ``"vtab:structured"``, ``"vtab/cifar,vtab/dtd"``), or task specs.
        source: a ``--source`` name (:data:`~pebench.datasets.sources.SOURCES`: ``"noah"``,
            ``"json"``, ``"coop"``, ``"tfds"``); its data format must be one of the tasks'
            (:func:`data_formats`: VTAB-1k reads ``noah`` or ``tfds``).
        data_dir: root of the raw data (the folder holding the task/dataset folders; for
            ``tfds`` the TFDS ``data_dir``).
        cache_dir: where the cache goes (default :func:`default_cache_dir`).
        image_size: side length of the stored images.
        force: re-decode everything, even an up-to-date cache; replaces a cache prepared
            from another data format (refused without it).
        allow_overlap: record images shared by train and test instead of failing.
        workers: decoding threads (default ``min(8, cpu count)``).
        progress: show progress bars.
        manual_dir: ``tfds`` only: TFDS ``manual_dir`` holding manually downloaded archives
            (resisc45, diabetic_retinopathy); missing builders that need one are then built
            from it with ``download_and_prepare`` (no network).
        download: ``tfds`` only: let TFDS download and build any missing builder (network).
        nonstandard_sizes: accept split sizes other than the tasks' (a pipeline on a laptop):
            the cache records its data format as ``<format>+nonstandard-sizes``, which every
            run row then carries (its own lineage: never mixed with standard rows).

    Every unit is checked and decoded before the first one is installed: a refused prepare
    leaves ``cache_dir`` as it was (no unit installed or replaced, no folder created).

    Returns:
        One :class:`UnitReport` per cache folder.

    Raises:
        pebench.datasets.formats.DatasetError: unknown source, a malformed list (file and
            line), a missing or corrupt image (path), a label out of range, wrong sizes,
            missing classes or train/test overlap (task and split).
    """
    row = _source(source)
    if int(image_size) < 1:
        raise CacheError(f"image size must be positive, got {image_size}")
    specs = resolve_specs(suite_or_tasks)
    _check_formats(row, specs)
    opts = _source_options(row, manual_dir, download)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise CacheError(f"--data-dir {data_dir} is not a folder")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    _check_present(row, specs, data_dir, cache, int(image_size))
    units: dict[str, list[TaskSpec]] = {}
    for spec in specs:
        units.setdefault(unit_name(spec), []).append(spec)
    workers = workers or min(8, os.cpu_count() or 1)
    return _prepare_units(
        list(units.values()),
        data_dir,
        cache,
        int(image_size),
        opts,
        force,
        allow_overlap,
        workers,
        progress,
        nonstandard_sizes,
    )  # fmt: skip


# ------------------------------------------------------------------------------- load --
def read_manifest(cache_dir: str | Path, spec: TaskSpec, image_size: int) -> dict:
    """The manifest covering ``spec`` at ``image_size``, after checking it describes ``spec``.

    Raises:
        CacheMissingError: no cache (the message gives the ``pebench prepare`` command).
        CacheError: a damaged manifest (file and field), or a cache prepared for another
            version or split definition.
    """
    return _checked_manifest(Path(cache_dir), spec, image_size)[1]


def _checked_manifest(cache_dir: Path, spec: TaskSpec, image_size: int) -> tuple[Path, dict]:
    """The folder holding ``spec``'s cache and its manifest (see :func:`read_manifest`)."""
    final = cache_path(cache_dir, spec, image_size)
    folder = _installed(final)
    command = _prepare_command(spec, cache_dir, image_size)
    try:
        manifest = _read_manifest(folder)
    except ManifestError as err:
        raise ManifestError(
            f"task {spec.name!r}: {err}; the cache cannot be trusted: prepare it again with "
            f"--force: {command}"
        ) from err
    if manifest is None and (raw := _raw_source(_suite_of(spec), cache_dir)) is not None:
        raise CacheMissingError(
            f"task {spec.name!r}: {_raw_advice(raw[1], cache_dir, raw[0], image_size)}"
        )
    if manifest is None or spec.name not in manifest["tasks"]:
        have = _sizes(final.parent)
        what = "no task entry in" if manifest is not None else "no prepared cache at"
        raise CacheMissingError(
            f"task {spec.name!r}: {what} {final} (image size {image_size}"
            + (f"; prepared sizes: {', '.join(have)}" if have else "")
            + f"). Run: {command}"
        )
    entry = manifest["tasks"][spec.name]
    if base_format(entry["data_format"]) not in spec.data_formats:
        raise CacheError(
            f"task {spec.name!r}: cache {final} has data format {entry['data_format']!r}, "
            f"the task reads {' or '.join(map(repr, spec.data_formats))}; re-run with --force: "
            f"{command}"
        )
    nonstandard = is_nonstandard(entry["data_format"])
    for key, want in _task_entry(spec, entry["data_format"]).items():
        if entry.get(key) != want and not (nonstandard and key == "sizes"):
            raise CacheError(
                f"task {spec.name!r}: cache {final} has {key} {entry.get(key)!r}, the task "
                f"spec says {want!r}; re-run with --force: {command}"
            )
    if missing := [c for c in _role_parts(spec, ROLES) if c not in manifest["splits"]]:
        raise CacheError(
            f"task {spec.name!r}: split {missing[0]!r} is not in {folder / 'manifest.json'}; "
            f"prepare the cache again with --force: {command}"
        )
    return folder, manifest


def _suite_of(spec: TaskSpec) -> list[TaskSpec]:
    """``spec``, then the other tasks of its suite (none if the suite is not registered)."""
    try:
        return [spec, *resolve_specs(spec.suite)]
    except RegistryError:
        return [spec]


#: the three arrays of a stored split: file kind -> (dtype, shape after ``N``)
_ARRAYS = {"images": (np.uint8, None), "labels": (np.int64, ()), "digests": (np.uint8, (16,))}


def _npy_layout(path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """dtype, shape and expected file size of a ``.npy`` file, from its header only.

    Raises:
        OSError: the file cannot be opened.
        ValueError: not a ``.npy`` header.
    """
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        if fortran:
            raise ValueError("Fortran-ordered array")
        return dtype, tuple(shape), fh.tell() + int(np.prod(shape)) * dtype.itemsize


def check_splits(spec: TaskSpec, data_dir: str | Path | None, image_size: int) -> None:
    """Cheaply verify every stored split ``spec``'s runs read, before any run starts.

    For each split of every role: the manifest entry exists and the images, labels and digests
    files exist with the dtype, shape and byte size the manifest implies (headers and file
    sizes only; the SHA-256 of the arrays is checked when a run loads them). A missing or
    truncated test split is found here, not by the final runs after the whole search trained.

    Args:
        spec: the task.
        data_dir: the cache folder (``None``: :func:`default_cache_dir`), as for :func:`load`.
        image_size: the prepared size.

    Raises:
        CacheMissingError: nothing prepared for this task and size (says what to run).
        CacheError: a damaged manifest, or a split file that is missing, of another shape or
            type, truncated or too long (names task, split and file).
    """
    cache = Path(data_dir) if data_dir is not None else default_cache_dir()
    folder, manifest = _checked_manifest(cache, spec, image_size)
    command = _prepare_command(spec, cache, image_size)
    for name in _role_parts(spec, ROLES):
        n = manifest["splits"][name]["size"]
        for kind, (dtype, rest) in _ARRAYS.items():
            path = folder / f"{name}.{kind}.npy"
            want = (n, *(rest if rest is not None else (image_size, image_size, 3)))
            where = f"task {spec.name!r}, split {name!r}"
            fix = f"prepare the cache again with --force: {command}"
            try:
                got_dtype, shape, size = _npy_layout(path)
                actual = path.stat().st_size
            except FileNotFoundError:
                raise CacheError(f"{where}: {path} is missing; {fix}") from None
            except (OSError, ValueError) as err:
                raise CacheError(f"{where}: {path} cannot be read ({err}); {fix}") from err
            if got_dtype != np.dtype(dtype) or shape != want:
                raise CacheError(
                    f"{where}: {path} holds {got_dtype} {list(shape)}, the manifest says "
                    f"{np.dtype(dtype)} {list(want)}; {fix}"
                )
            if actual != size:
                state = "truncated" if actual < size else "longer than its header says"
                raise CacheError(
                    f"{where}: {path} is {state} ({actual:,} bytes, {size:,} expected); {fix}"
                )


def _load_stored(
    folder: Path, manifest: dict, spec: TaskSpec, name: str, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    entry = manifest["splits"].get(name)
    where = f"task {spec.name!r}, split {name!r}"
    if entry is None:
        raise CacheError(f"{where}: not in {folder / 'manifest.json'}")
    try:
        images = np.load(folder / f"{name}.images.npy", mmap_mode="r")
        labels = np.load(folder / f"{name}.labels.npy")
    except (OSError, ValueError) as err:
        raise CacheError(f"{where}: unreadable cache file in {folder}: {err}") from err
    shape = [entry["size"], image_size, image_size, 3]
    if list(images.shape) != shape or images.dtype != np.uint8:
        raise CacheError(f"{where}: images are {images.dtype} {list(images.shape)}, want {shape}")
    if labels.shape != (entry["size"],) or labels.dtype != np.int64:
        raise CacheError(f"{where}: labels are {labels.dtype} {labels.shape}, want {entry['size']}")
    if (got := array_sha256(images, labels)) != entry["sha256"]:
        raise CacheError(
            f"{where}: arrays hash {got[:16]}, manifest says {entry['sha256'][:16]} (the cache "
            f"in {folder} was modified or is damaged; prepare it again with --force)"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise CacheError(
            f"{where}: labels span {labels.min()}..{labels.max()}, expected "
            f"0..{spec.num_classes - 1}"
        )
    return images, labels


def _digests(folder: Path, manifest: dict, spec: TaskSpec, name: str) -> np.ndarray:
    try:
        dig = np.load(folder / f"{name}.digests.npy")
    except (OSError, ValueError) as err:
        raise CacheError(
            f"task {spec.name!r}, split {name!r}: unreadable cache file in {folder}: {err}"
        ) from err
    if _sha(dig) != manifest["splits"][name]["digests_sha256"]:
        raise CacheError(f"task {spec.name!r}, split {name!r}: image digests do not match manifest")
    return dig


def load(
    spec: TaskSpec, split: str, data_dir: str | Path | None, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Task loader of cached suites (see :class:`pebench.datasets.TaskSpec`).

    Args:
        spec: the task.
        split: one of the task's split names (``"a+b"`` concatenates stored splits).
        data_dir: the **cache** folder written by ``pebench prepare`` (``None``:
            :func:`default_cache_dir`).
        image_size: side length; a cache must have been prepared at exactly this size.

    Returns:
        ``(images, labels)``: uint8 ``(N, S, S, 3)`` (memory-mapped for stored splits) and int64.

    Raises:
        CacheMissingError: nothing prepared for this task and size (says what to run).
        CacheError: a size, label range, hash or overlap check fails (names task and split).
    """
    cache_dir = Path(data_dir) if data_dir is not None else default_cache_dir()
    folder, manifest = _checked_manifest(cache_dir, spec, image_size)
    parts = [_load_stored(folder, manifest, spec, c, image_size) for c in components(split)]
    recorded = manifest["tasks"][spec.name]["overlap"]
    count, examples = _overlap(
        {s: _digests(folder, manifest, spec, s) for s in _train_side(spec)},
        np.concatenate([_digests(folder, manifest, spec, s) for s in _test(spec)]),
    )
    if count != recorded["count"] or (count and not recorded["allowed"]):
        raise CacheError(
            f"task {spec.name!r}: {count} test images occur in training splits, manifest "
            f"records {recorded['count']} ({', '.join(examples)})"
        )
    if len(parts) == 1:
        images, labels = parts[0]
    else:
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
    sizes = manifest["tasks"][spec.name]["sizes"]  # the task's, or a non-standard cache's own
    if split in sizes and len(labels) != sizes[split]:
        raise CacheError(
            f"task {spec.name!r}, split {split!r}: {len(labels)} examples in the cache, "
            f"expected {sizes[split]}"
        )
    return images, labels


def manifest_hash(
    cache_dir: str | Path | None, task: str | TaskSpec, image_size: int | None = None
) -> str:
    """Identity of a task's prepared data: 16 hex digits over its manifest entries.

    Covers the task's entry (version, format, classes, splits, sizes, overlap record), the
    image size and resize rule, and the SHA-256 of every stored split the task uses; equal
    values mean byte-identical arrays. ``image_size=None`` picks the only prepared size.

    Raises:
        CacheMissingError: no cache, or several sizes and ``image_size`` not given.
    """
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if image_size is None:
        sizes = _sizes(cache / unit_name(spec))
        if len(sizes) != 1:
            raise CacheMissingError(
                f"task {spec.name!r}: {len(sizes)} prepared image sizes in "
                f"{cache / unit_name(spec)} ({', '.join(sizes)}); pass image_size"
            )
        image_size = int(sizes[0][:-2])
    m = read_manifest(cache, spec, image_size)
    payload = {
        "schema": m["schema"],
        "image_size": m["image_size"],
        "resize": m["resize"],
        "task": m["tasks"][spec.name],
        "splits": {c: m["splits"][c]["sha256"] for c in _role_parts(spec, ROLES)},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def describe(spec: TaskSpec, data_dir: str | Path | None, image_size: int) -> tuple[str, str]:
    """What a run on ``spec`` reads: ``(data_format, manifest_hash)`` of its prepared cache.

    ``data_format`` comes from the manifest (``"noah-jpeg"`` or ``"tfds"`` for VTAB-1k: the
    two lineages are not comparable), ``manifest_hash`` is :func:`manifest_hash`.

    Args:
        spec: the task.
        data_dir: the cache folder (``None``: :func:`default_cache_dir`), as for :func:`load`.
        image_size: the prepared size.

    Raises:
        CacheMissingError: nothing prepared for this task and size (says what to run).
        CacheError: the cache does not describe ``spec``.
    """
    cache = Path(data_dir) if data_dir is not None else default_cache_dir()
    manifest = read_manifest(cache, spec, image_size)
    return manifest["tasks"][spec.name]["data_format"], manifest_hash(cache, spec, image_size)


def verified_sha256(
    spec: TaskSpec, split: str, data_dir: str | Path | None, image_size: int
) -> str | None:
    """The :func:`array_sha256` of a stored split, as :func:`load` verified it (no re-read).

    ``None`` for a split made of several stored parts (``"a+b"``), whose hash is not stored.
    """
    parts = components(split)
    if len(parts) != 1:
        return None
    cache = Path(data_dir) if data_dir is not None else default_cache_dir()
    return read_manifest(cache, spec, image_size)["splits"][parts[0]]["sha256"]


def verify(
    suite_or_tasks: str | TaskSpec | Sequence[TaskSpec | str],
    cache_dir: str | Path | None = None,
    image_size: int = 224,
) -> dict[str, str]:
    """Load every role of every task (all load-time checks); task name -> manifest hash."""
    out = {}
    for spec in resolve_specs(suite_or_tasks):
        for role in ROLES:
            load(spec, spec.splits[role], cache_dir, image_size)
        out[spec.name] = manifest_hash(cache_dir, spec, image_size)
    return out


#: the loader of every cached family (VTAB-1k, FGVC, few-shot): ``TaskSpec.loader`` is
#: ``"pebench.datasets.cache:LOADER"``
LOADER = Loader(load=load, describe=describe, verified_sha256=verified_sha256, check=check_splits)


__all__ = [
    "LOADER",
    "CacheError",
    "CacheMissingError",
    "RESIZE",
    "RESIZE_ARRAYS",
    "SourceOptions",
    "ManifestError",
    "UnitReport",
    "array_sha256",
    "cache_path",
    "check_splits",
    "default_cache_dir",
    "describe",
    "load",
    "manifest_hash",
    "prepare",
    "read_manifest",
    "unit_name",
    "verified_sha256",
    "verify",
]
