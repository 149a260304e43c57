"""Prepared caches: decode the source images once, store uint8 arrays, check them on every load.

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
with the ``pebench prepare`` command to run.

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

Why one module of this size: preparing and loading are the two halves of one on-disk contract
(folder layout, manifest schema, split and task entries, overlap record, identity hashes). The
writer and the reader share every private helper that defines it (:func:`_task_entry`,
:func:`_role_parts`, :func:`_overlap`, :func:`_read_manifest`...), and keeping them in one file
keeps a change to the contract in one place; the source readers live in
:mod:`pebench.datasets.sources` and :mod:`pebench.datasets.formats`.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pebench.datasets.catalog import get_task, resolve_specs
from pebench.datasets.formats import (
    ArraySplit,
    DatasetError,
    ImageError,
    SplitList,
    array_image,
    check_inside,
    decode_image,
    manifest_json,
)
from pebench.datasets.sources import (
    RESIZE,
    RESIZE_ARRAYS,
    SOURCES,
    Source,
    SourceOptions,
    Split,
    source_for,
    source_of,
)
from pebench.datasets.spec import ROLES, Loader, TaskSpec, array_sha256
from pebench.results import umask

SCHEMA = "pebench-cache-1"
_CHUNK = 256
_ALLOWED = "allow_overlap=True"
_SIZE_DIR = re.compile(r"^(\d+)px$")
#: work folders of :func:`prepare` next to ``<S>px``: ``.tmp-<S>px-*`` (being written) and
#: ``.old-<S>px-*`` (the replaced cache, between the two renames of :func:`_install`)
_LITTER = re.compile(r"^\.(tmp|old)-(\d+px)-")
_LOCK = ".lock"
#: bytes of a ``.npy`` header (numpy pads it to 64-byte multiples; 128 for these shapes)
_NPY_HEADER = 256
#: room kept for the manifest: a base plus some per split (class counts, notes)
_MANIFEST_BYTES, _MANIFEST_PER_SPLIT = 64 * 1024, 16 * 1024
#: errors meaning "the disk is full" (or the file-size limit is reached)
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class CacheError(DatasetError):
    """A cache that does not match its task spec or manifest (names task, split, difference)."""


class CacheMissingError(CacheError):
    """No prepared cache for a task at this image size; the message says what to run."""


class ManifestError(CacheError):
    """A ``manifest.json`` that cannot be read, is not JSON or has fields of the wrong type."""


def default_cache_dir() -> Path:
    """``$PEBENCH_CACHE`` if set, else ``~/.cache/pebench``."""
    env = os.environ.get("PEBENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pebench"


def unit_name(spec: TaskSpec) -> str:
    """Cache unit of a task: ``<suite>/<dataset>`` (the first two parts of its id)."""
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


# ---------------------------------------------------------------------------- prepare --
@dataclass
class UnitReport:
    """What :func:`prepare` did for one cache folder.

    Attributes:
        unit: ``<suite>/<dataset>``.
        path: the cache folder.
        status: ``"written"`` or ``"up to date"``.
        splits: split name -> number of examples.
        decoded: images decoded in this call.
        seconds: wall time.
    """

    unit: str
    path: Path
    status: str
    splits: dict[str, int]
    decoded: int
    seconds: float


def _read_lists(
    specs: list[TaskSpec], data_dir: Path, splits: list[str], opts: SourceOptions
) -> tuple[dict[str, Split], dict[str, Any]]:
    """The unit's splits and facts about the reader for the manifest's ``source`` entry."""
    source = source_for(opts.data_format)
    if source is None:
        raise CacheError(f"task {specs[0].name!r}: no reader for data format {opts.data_format!r}")
    return source.read(specs, data_dir, splits, opts)


def _check_lists(specs: list[TaskSpec], lists: dict[str, Split]) -> None:
    """Sizes, label range, class presence and k-shot counts, before anything is decoded."""
    for spec in specs:
        for role in ROLES:
            split = spec.splits[role]
            for comp in components(split):
                sl = lists[comp]
                bad = np.flatnonzero((sl.labels < 0) | (sl.labels >= spec.num_classes))
                if len(bad):
                    i = int(bad[0])
                    raise CacheError(
                        f"task {spec.name!r}, split {comp!r}: label {int(sl.labels[i])} out of "
                        f"range 0..{spec.num_classes - 1} ({sl.where(i)})"
                    )
                if (k := re.search(r"num_shot_(\d+)", comp)) and len(sl.labels):
                    counts = np.bincount(sl.labels, minlength=spec.num_classes)
                    if not np.all(counts == int(k[1])):
                        c = int(np.flatnonzero(counts != int(k[1]))[0])
                        raise CacheError(
                            f"task {spec.name!r}, split {comp!r}: class {c} has {counts[c]} "
                            f"images, a {k[1]}-shot list needs {k[1]} per class ({sl.origin()})"
                        )
            n = sum(len(lists[c].labels) for c in components(split))
            if split in spec.sizes and n != spec.sizes[split]:
                files = ", ".join(lists[c].origin() for c in components(split))
                notes = "; ".join(x for c in components(split) for x in lists[c].notes)
                raise CacheError(
                    f"task {spec.name!r}, split {split!r}: {n} examples listed in {files}, "
                    f"expected {spec.sizes[split]}" + (f" ({notes})" if notes else "")
                )
        present = np.unique(np.concatenate([lists[c].labels for c in _role_parts(spec, ROLES)]))
        if len(present) != spec.num_classes:
            missing = sorted(set(range(spec.num_classes)) - set(present.tolist()))
            raise CacheError(
                f"task {spec.name!r}: {len(present)} of {spec.num_classes} classes occur in its "
                f"splits; never seen: {missing[:10]}{' ...' if len(missing) > 10 else ''}"
            )


#: VTAB-1k's stored splits: ``train800val200`` must be ``train800`` followed by ``val200``
_TRAINVAL = ("train800val200", ("train800", "val200"))


def _check_trainval(
    unit: str, lists: dict[str, Split], digests: dict[str, np.ndarray] | None = None
) -> None:
    """``train800val200`` must list ``train800`` then ``val200``: labels, then decoded images.

    Called before decoding (labels only) and after (``digests``: the decoded-image hashes).

    Raises:
        CacheError: the first entry that differs (list line, the entry it should equal).
    """
    whole, (a, b) = _TRAINVAL
    if not {whole, a, b} <= set(lists):
        return
    parts = [(a, i) for i in range(len(lists[a].labels))]
    parts += [(b, i) for i in range(len(lists[b].labels))]
    tv = lists[whole]
    if len(tv.labels) != len(parts):
        raise CacheError(
            f"{unit}: {tv.origin()} lists {len(tv.labels)} images, {a} + {b} have "
            f"{len(parts)}; {whole} must be {a} followed by {b}"
        )
    for i, (name, j) in enumerate(parts):
        if tv.labels[i] != lists[name].labels[j]:
            what = f"label {int(tv.labels[i])}, {name} entry {j + 1} ({lists[name].where(j)}) "
            what += f"has label {int(lists[name].labels[j])}"
        elif digests is not None and not np.array_equal(digests[whole][i], digests[name][j]):
            what = f"an image other than {name} entry {j + 1} ({lists[name].where(j)})"
        else:
            continue
        raise CacheError(
            f"{unit}: {whole} differs from {a} + {b}: entry {i + 1} ({tv.where(i)}) has "
            f"{what}; {whole} must be {a} followed by {b}, image for image"
        )


def _new_array(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A uint8 ``.npy`` file of ``shape`` with every data block allocated, memory-mapped.

    The blocks are reserved (``posix_fallocate``) before the map is written through, so a full
    disk is an ``OSError`` (``ENOSPC``) here and never a ``SIGBUS`` in the middle of a write.
    """
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False}
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {**header, "shape": shape})
        offset = fh.tell()
        size = offset + int(np.prod(shape))
        _preallocate(fh, size)
    return np.memmap(path, dtype=np.uint8, mode="r+", offset=offset, shape=shape)


def _preallocate(fh: Any, size: int) -> None:
    """Allocate ``size`` bytes of an open file (writes zeros where ``fallocate`` is missing)."""
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fh.fileno(), 0, size)
            return
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
    fh.seek(0, os.SEEK_END)
    zeros = bytes(1 << 20)
    while (left := size - fh.tell()) > 0:
        fh.write(zeros[:left])
    fh.flush()


def _decode_split(
    sl: Split, out_dir: Path, image_size: int, workers: int, progress: bool
) -> tuple[np.ndarray, int]:
    """Decode a split into ``out_dir``; returns its digests and the number of decodes."""
    n = len(sl.labels)
    images = _new_array(out_dir / f"{sl.name}.images.npy", (n, image_size, image_size, 3))
    digests = np.zeros((n, 16), dtype=np.uint8)
    if isinstance(sl, ArraySplit):
        _resize_stream(sl, images, digests, image_size, progress)
        todo = range(n)
    else:
        todo = _decode_files(sl, images, digests, image_size, workers, progress)
    images.flush()
    np.save(out_dir / f"{sl.name}.labels.npy", sl.labels.astype(np.int64))
    np.save(out_dir / f"{sl.name}.digests.npy", digests)
    del images
    return digests, len(todo)


def _resize_stream(
    sl: ArraySplit, images: np.ndarray, digests: np.ndarray, image_size: int, progress: bool
) -> None:
    """Resize a source's decoded arrays in order; the stream must hold exactly the labelled ones."""
    from tqdm.auto import tqdm

    n, i = len(sl.labels), -1
    for i, arr in enumerate(tqdm(sl.stream(), sl.name, n, leave=False, disable=not progress)):
        if i >= n:
            raise ImageError(f"{sl.origin()}: more than the {n} labelled images")
        images[i], digest = array_image(arr, image_size, sl.where(i))
        digests[i] = np.frombuffer(digest, dtype=np.uint8)
    if i + 1 != n:
        raise ImageError(f"{sl.origin()}: {i + 1} images, but {n} labels")


def _decode_files(
    sl: SplitList,
    images: np.ndarray,
    digests: np.ndarray,
    image_size: int,
    workers: int,
    progress: bool,
) -> list[int]:
    """Decode listed files (each distinct path once, in threads); returns the decoded indices."""
    first: dict[Path, int] = {}
    todo = [i for i, p in enumerate(sl.paths) if first.setdefault(p, i) == i]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc=sl.name, disable=not progress, leave=False)

    def work(i: int) -> tuple[int, np.ndarray, bytes]:
        try:
            if sl.root is not None:
                check_inside(sl.paths[i], sl.root)
            return (i, *decode_image(sl.paths[i], image_size))
        except DatasetError as err:
            raise type(err)(f"{err} (listed in {sl.where(i)})") from err

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in range(0, len(todo), 4 * _CHUNK):
            for i, arr, digest in pool.map(work, todo[start : start + 4 * _CHUNK]):
                images[i] = arr
                digests[i] = np.frombuffer(digest, dtype=np.uint8)
            bar.update(min(4 * _CHUNK, len(todo) - start))
    bar.close()
    for i, p in enumerate(sl.paths):
        if first[p] != i:
            images[i], digests[i] = images[first[p]], digests[first[p]]
    return todo


def _split_entry(sl: Split, out_dir: Path, data_dir: Path, num_classes: int) -> dict:
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


def _task_entry(spec: TaskSpec, data_format: str) -> dict[str, Any]:
    return {
        "version": spec.version,
        "data_format": data_format,
        "num_classes": spec.num_classes,
        "splits": dict(sorted(spec.splits.items())),
        "sizes": dict(sorted(spec.sizes.items())),
    }


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
    """The manifest :func:`prepare` may build on: ``None`` when missing or damaged."""
    try:
        return _read_manifest(folder)
    except ManifestError:
        return None  # nothing in a damaged cache can be trusted: it is rebuilt and replaced


def _stored_identity(entry: dict | None) -> str | None:
    """The source identity a manifest split entry was written from (list or source hash)."""
    if entry is None:
        return None
    return entry.get("list_sha256") or entry.get("source_sha256")


def _up_to_date(
    manifest: dict | None,
    specs: list[TaskSpec],
    lists: dict[str, Split],
    allow: bool,
    data_format: str,
) -> bool:
    if manifest is None:
        return False
    for name, sl in lists.items():
        if _stored_identity(manifest["splits"].get(name)) != sl.identity():
            return False
    recorded = manifest["tasks"]
    for s in specs:
        entry = recorded.get(s.name)
        wanted = _task_entry(s, data_format)
        if entry is None or any(entry.get(k) != v for k, v in wanted.items()):
            return False
        if entry["overlap"]["allowed"] == _ALLOWED and not allow:
            return False  # accepted with --allow-overlap before; check again without it
    return True


# ------------------------------------------------------------- install, lock, litter --
def _old_copy(path: Path) -> Path | None:
    """The cache inside an ``.old-*`` folder (this version's layout, or ``x/`` of older ones)."""
    for folder in (path, path / "x"):
        if (folder / "manifest.json").is_file():
            return folder
    return None


def _old_copies(final: Path) -> list[Path]:
    """Complete caches set aside from ``final`` by an install, newest first."""
    try:
        entries = list(final.parent.iterdir())
    except OSError:
        return []
    found = []
    for p in entries:
        m = _LITTER.match(p.name)
        if m and m[1] == "old" and m[2] == final.name and (c := _old_copy(p)) is not None:
            try:
                found.append((c.stat().st_mtime_ns, c))
            except OSError:
                continue  # removed meanwhile (the install finished)
    return [c for _, c in sorted(found, reverse=True)]


def _installed(final: Path) -> Path:
    """Where readers find the cache ``final``: itself, or the old copy an install set aside.

    :func:`_install` renames the old cache out of the way, then the new one into place; between
    the two renames (or after a prepare was killed there) the old copy is the cache.
    """
    if final.is_dir():
        return final
    olds = _old_copies(final)
    return final if not olds or final.is_dir() else olds[0]


def _install(tmp: Path, final: Path) -> None:
    """Swap a finished folder into place; readers find the old or the new cache at every instant.

    The old cache is renamed to ``.old-<S>px-<pid>-<random>``, then the new one to ``<S>px``
    (each rename is atomic), then the old copy is removed. Readers fall back to the old copy
    between the renames (:func:`_installed`); a prepare killed there leaves it for the next
    prepare to put back (:func:`_tidy`).
    """
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{os.getpid()}-{secrets.token_hex(4)}"
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_folder(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _tidy(unit_dir: Path) -> None:
    """Clear what killed prepares left in a unit folder (the caller holds the unit's lock).

    An ``.old-<S>px-*`` copy whose ``<S>px`` is missing is put back (the prepare died between
    the two renames of :func:`_install`); every other ``.tmp-*`` / ``.old-*`` folder is
    removed. No live prepare owns one: they all hold the lock.
    """
    for entry in sorted(unit_dir.iterdir()):
        m = _LITTER.match(entry.name)
        if m is None:
            continue
        final = unit_dir / m[2]
        if m[1] == "old" and not final.exists() and (olds := _old_copies(final)):
            os.replace(olds[0], final)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


@contextmanager
def _unit_lock(unit_dir: Path, unit: str) -> Iterator[OSError | None]:
    """Hold ``<unit_dir>/.lock`` while one prepare writes into a unit folder.

    Yields ``None`` once locked, or the error saying why the folder cannot be written (a
    read-only cache: only an up-to-date check is possible). A second prepare of the unit is
    refused while the lock is held, not queued. The lock file is removed on release; an acquirer
    checks that the file it locked is still the one in the folder, so the removal never admits
    two holders. A killed holder's lock is released by the kernel, and its file reused by the
    next prepare.

    Raises:
        CacheError: another process holds the lock, or the disk is full.
    """
    path = unit_dir / _LOCK
    while True:
        try:
            unit_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:
            continue  # a failed first prepare removed the empty folder meanwhile
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                yield err
                return
            if (mapped := _os_error(err, unit, unit_dir, None)) is err:
                raise
            raise mapped from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            same = os.path.exists(path) and os.path.samestat(os.fstat(fd), os.stat(path))
        except BlockingIOError:
            os.close(fd)
            raise CacheError(
                f"{unit}: another pebench prepare is writing {unit_dir} (it holds {path}); "
                f"wait for it to finish, then run this again"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)  # the file was removed by its last holder: lock the new one
    try:
        yield None
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def _fsync_folder(path: Path) -> None:
    """Make renames inside ``path`` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    out = []
    while not folder.exists() and folder.parent != folder:
        out.append(folder)
        folder = folder.parent
    return out


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders a failed prepare created, deepest first, as long as they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _split_bytes(n: int, image_size: int) -> int:
    """Disk bytes of one stored split of ``n`` examples (images, labels, digests)."""
    return 3 * _NPY_HEADER + n * (image_size * image_size * 3 + 8 + 16)


def _reused(old: dict | None, name: str, sl: Split) -> bool:
    """Whether split ``name`` of the old cache was written from the same source as ``sl``."""
    prev = (old or {}).get("splits", {}).get(name)
    return prev is not None and _stored_identity(prev) == sl.identity()


def _check_space(
    unit: str, folder: Path, lists: dict[str, Split], old: dict | None, image_size: int
) -> tuple[int, int]:
    """Bytes a prepare will write into ``folder`` and bytes free there, checked before writing.

    Reused splits are hard links (no space); the manifest gets a generous allowance.

    Raises:
        CacheError: fewer bytes free than needed (names the folder and both numbers).
    """
    todo = [len(sl.labels) for name, sl in lists.items() if not _reused(old, name, sl)]
    need = sum(_split_bytes(n, image_size) for n in todo)
    need += _MANIFEST_BYTES + _MANIFEST_PER_SPLIT * len(lists)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise CacheError(
            f"{unit}: not enough disk space in {folder}: the cache needs {need:,} bytes, "
            f"{free:,} are free; free some space or choose another --cache-dir"
        )
    return need, free


def _os_error(err: OSError, unit: str, folder: Path, space: tuple[int, int] | None) -> Exception:
    """One-line error for a failed write into ``folder`` (``err`` itself if not a disk problem)."""
    if err.errno in _FULL:
        sizes = f"; it needs about {space[0]:,} bytes, {space[1]:,} were free" if space else ""
        return CacheError(
            f"{unit}: writing the cache in {folder} failed: {err.strerror}{sizes}; nothing was "
            f"kept: free some space or choose another --cache-dir"
        )
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CacheError(
            f"{unit}: cannot write the cache in {folder} ({err.strerror}); choose another "
            f"--cache-dir"
        )
    return err


def _check_lineage(existing: dict | None, unit: str, final: Path, data_format: str) -> None:
    """Refuse to mix a unit prepared from one data format with another (without ``--force``)."""
    if existing is None or existing.get("data_format") == data_format:
        return
    have = existing.get("data_format")
    raise CacheError(
        f"{unit}: the cache {final} was prepared from data format {have!r} (--source "
        f"{source_of(have)}), not {data_format!r} (--source {source_of(data_format)}); the two "
        f"lineages give different numbers and are never mixed. Use another --cache-dir, or "
        f"--force to replace the {have!r} cache"
    )


def _prepare_unit(
    specs: list[TaskSpec],
    data_dir: Path,
    cache_dir: Path,
    image_size: int,
    opts: SourceOptions,
    force: bool,
    allow_overlap: bool,
    workers: int,
    progress: bool,
) -> UnitReport:
    """Prepare one cache folder under its unit's lock, after clearing earlier litter.

    Folders this call creates are removed again if nothing gets installed in them.
    """
    unit = unit_name(specs[0])
    final = cache_path(cache_dir, specs[0], image_size)
    created = _new_folders(final.parent)
    try:
        with _unit_lock(final.parent, unit) as read_only:
            if read_only is None:
                _tidy(final.parent)
            args = (data_dir, final, image_size, opts, force, allow_overlap, workers, progress)
            return _prepare_locked(specs, *args, read_only=read_only)
    finally:
        _remove_empty(created)


def _prepare_locked(
    specs: list[TaskSpec],
    data_dir: Path,
    final: Path,
    image_size: int,
    opts: SourceOptions,
    force: bool,
    allow_overlap: bool,
    workers: int,
    progress: bool,
    *,
    read_only: OSError | None,
) -> UnitReport:
    """:func:`_prepare_unit` once the unit is locked (``read_only``: why it could not be)."""
    t0 = time.perf_counter()
    unit = unit_name(specs[0])
    fmt = opts.data_format
    old = _reusable_manifest(_installed(final))
    if not force:
        _check_lineage(old, unit, final, fmt)
    resize = _resize_rule(fmt)
    if force or (old is not None and old.get("resize") != resize):
        old = None  # forced, or decoded by another pipeline: nothing can be reused
    wanted = list(dict.fromkeys(c for s in specs for c in _role_parts(s, ROLES)))
    if old is not None:  # keep splits and tasks prepared earlier (e.g. other few-shot seeds)
        wanted += [s for s in old["splits"] if s not in wanted]
    lists, source_info = _read_lists(specs, data_dir, wanted, opts)
    _check_lists(specs, lists)
    _check_trainval(unit, lists)
    sizes = {s: len(sl.labels) for s, sl in lists.items()}
    if _up_to_date(old, specs, lists, allow_overlap, fmt):
        return UnitReport(unit, final, "up to date", sizes, 0, time.perf_counter() - t0)
    if read_only is not None:
        raise _os_error(read_only, unit, final.parent, None) from read_only

    space = _check_space(unit, final.parent, lists, old, image_size)
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
        digests, reused, decoded = _store_splits(
            lists, old, final, tmp, image_size, workers, progress
        )
        entries = _split_entries(lists, old, reused, digests, tmp, data_dir, specs)
        kept = {
            name: t
            for name, t in (old or {}).get("tasks", {}).items()
            if all(c in reused for c in t["splits_stored"])
        }
        for spec in specs:
            kept[spec.name] = _overlap_entry(spec, digests, fmt, source_info, allow_overlap)
        manifest = _manifest(unit, fmt, image_size, resize, data_dir, source_info, entries, kept)
        (tmp / "manifest.json").write_text(manifest_json(manifest))
        _fsync_dir(tmp)
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp's folder is private: give it the umask's mode
        _install(tmp, final)
    except BaseException as err:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        mapped = _os_error(err, unit, final.parent, space) if isinstance(err, OSError) else err
        if mapped is err:
            raise
        raise mapped from err
    return UnitReport(unit, final, "written", sizes, decoded, time.perf_counter() - t0)


def _resize_rule(data_format: str) -> str:
    """The decode and resize rule of the source reading ``data_format``."""
    source = source_for(data_format)
    return source.resize if source is not None else RESIZE


def _store_splits(
    lists: dict[str, Split],
    old: dict | None,
    final: Path,
    tmp: Path,
    image_size: int,
    workers: int,
    progress: bool,
) -> tuple[dict[str, np.ndarray], set[str], int]:
    """Write every split into ``tmp``: unchanged ones linked from ``final``, others decoded.

    Returns:
        Digests by split, the names of the reused splits, and the number of decoded images.
    """
    decoded, digests, reused = 0, {}, set()
    for name, sl in lists.items():
        if _reused(old, name, sl):
            for kind in ("images", "labels", "digests"):
                _link(final / f"{name}.{kind}.npy", tmp / f"{name}.{kind}.npy")
            digests[name] = np.load(tmp / f"{name}.digests.npy")
            reused.add(name)
        else:
            digests[name], n = _decode_split(sl, tmp, image_size, workers, progress)
            decoded += n
    return digests, reused, decoded


def _split_entries(
    lists: dict[str, Split],
    old: dict | None,
    reused: set[str],
    digests: dict[str, np.ndarray],
    tmp: Path,
    data_dir: Path,
    specs: list[TaskSpec],
) -> dict[str, dict]:
    """Manifest entries of the stored splits (reused ones copied from the old manifest)."""
    num_classes = max(s.num_classes for s in specs)
    entries = {}
    for name, sl in lists.items():
        if name in reused:
            entries[name] = old["splits"][name]
        else:
            entries[name] = _split_entry(sl, tmp, data_dir, num_classes)
    whole, (a, b) = _TRAINVAL
    if {whole, a, b} <= set(lists):
        _check_trainval(unit_name(specs[0]), lists, digests)
        entries[whole]["notes"] = sorted(
            set(entries[whole]["notes"]) | {f"equals {a} + {b} (images and labels)"}
        )
    return entries


def _overlap_entry(
    spec: TaskSpec,
    digests: dict[str, np.ndarray],
    data_format: str,
    source_info: dict[str, Any],
    allow_overlap: bool,
) -> dict[str, Any]:
    """The manifest's task entry, after the train/test overlap check.

    Raises:
        CacheError: test images also in training splits, unless inherent to the task
            (``spec.known_overlap``) or allowed.
    """
    count, examples = _overlap(
        {s: digests[s] for s in _train_side(spec)},
        np.concatenate([digests[s] for s in _test(spec)]),
    )
    reason = spec.known_overlap or (_ALLOWED if allow_overlap else "")
    if count and not reason:
        raise CacheError(
            f"task {spec.name!r}: {count} test images also occur in "
            f"{'/'.join(_train_side(spec))} (identical decoded pixels), e.g. "
            f"{', '.join(examples)}; fix the data, or record it with --allow-overlap"
        )
    return {
        **_task_entry(spec, data_format),
        **source_info.get("tasks", {}).get(spec.name, {}),
        "splits_stored": _role_parts(spec, ROLES),
        "overlap": {"count": count, "allowed": reason, "examples": examples},
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


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _source(name: str) -> Source:
    """The :data:`~pebench.datasets.sources.SOURCES` row of ``--source name``."""
    if name not in SOURCES:
        raise CacheError(f"unknown --source {name!r}; choose from {', '.join(SOURCES)}")
    return SOURCES[name]


def _check_formats(source: Source, specs: list[TaskSpec]) -> None:
    """Every task must be preparable from ``source``'s data format."""
    for spec in specs:
        have = spec.data_formats
        if source.data_format not in have:
            raise CacheError(
                f"task {spec.name!r} is read from data format {' or '.join(map(repr, have))} "
                f"(--source {' or '.join(source_of(f) for f in have)}), not --source "
                f"{source.name} ({source.data_format})"
            )


def _source_options(source: Source, manual_dir: str | Path | None, download: bool) -> SourceOptions:
    """Reader options; ``manual_dir`` and ``download`` only for sources that fetch (TFDS)."""
    if not source.fetch_options and (manual_dir is not None or download):
        fetching = " or ".join(s.name for s in SOURCES.values() if s.fetch_options)
        raise CacheError(f"--manual-dir and --download only apply to --source {fetching}")
    return SourceOptions(
        source.data_format, Path(manual_dir) if manual_dir is not None else None, download
    )


def _by_unit(specs: list[TaskSpec]) -> str:
    """Task ids in words, a unit of several tasks (few-shot) as ``<unit> (<n> tasks)``."""
    units: dict[str, list[str]] = {}
    for spec in specs:
        units.setdefault(unit_name(spec), []).append(spec.name)
    return ", ".join(
        names[0] if len(names) == 1 else f"{unit} ({len(names)} tasks)"
        for unit, names in units.items()
    )


def _check_present(
    source: Source, specs: list[TaskSpec], data_dir: Path, cache_dir: Path, image_size: int
) -> None:
    """Every selected task's folder must be in ``data_dir`` before anything is prepared.

    Raises:
        CacheError: one line listing the tasks found and missing, and the command preparing
            only the found ones (nothing is prepared unless the user asks for those).
    """
    if source.present is None:
        return
    found = [s for s in specs if source.present(s, data_dir)]
    if len(found) == len(specs):
        return
    missing = [s for s in specs if s not in found]
    text = (
        f"--data-dir {data_dir} holds the folders of {len(found)} of the {len(specs)} selected "
        f"tasks (--source {source.name}: {source.layout}); missing: {_by_unit(missing)}"
    )
    if found:
        text += (
            f"; found: {_by_unit(found)}. To prepare only those: pebench prepare "
            f"{','.join(s.name for s in found)} --source {source.name} --data-dir {data_dir} "
            f"--cache-dir {cache_dir} --image-size {image_size}"
        )
    raise CacheError(text + " (the layouts are in docs/data.md)")


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
    return [
        _prepare_unit(
            group, data_dir, cache, int(image_size), opts, force, allow_overlap, workers, progress
        )
        for group in units.values()
    ]


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
    if manifest is None or spec.name not in manifest["tasks"]:
        have = _sizes(final.parent)
        what = "no task entry in" if manifest is not None else "no prepared cache at"
        raise CacheMissingError(
            f"task {spec.name!r}: {what} {final} (image size {image_size}"
            + (f"; prepared sizes: {', '.join(have)}" if have else "")
            + f"). Run: {command}"
        )
    entry = manifest["tasks"][spec.name]
    if entry["data_format"] not in spec.data_formats:
        raise CacheError(
            f"task {spec.name!r}: cache {final} has data format {entry['data_format']!r}, "
            f"the task reads {' or '.join(map(repr, spec.data_formats))}; re-run with --force: "
            f"{command}"
        )
    for key, want in _task_entry(spec, entry["data_format"]).items():
        if entry.get(key) != want:
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


def _sizes(unit_dir: Path) -> list[str]:
    """Prepared size folders (``"224px"``...) of a unit, smallest first.

    A size whose folder is set aside by an install (:func:`_installed`) counts too.
    """
    if not unit_dir.is_dir():
        return []
    found = {p.name for p in unit_dir.iterdir() if _SIZE_DIR.match(p.name)}
    for p in unit_dir.iterdir():
        if (m := _LITTER.match(p.name)) and m[1] == "old" and _old_copy(p) is not None:
            found.add(m[2])
    return sorted(found, key=lambda n: int(n[:-2]))


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
    if split in spec.sizes and len(labels) != spec.sizes[split]:
        raise CacheError(
            f"task {spec.name!r}, split {split!r}: {len(labels)} examples in the cache, "
            f"expected {spec.sizes[split]}"
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
