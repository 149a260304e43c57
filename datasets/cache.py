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
temporary name and renamed into place. A folder holds one data format (``manifest.json``
``data_format``): VTAB-1k can come from NOAH JPEGs (``noah-jpeg``) or TFDS (``tfds``), two
lineages that give different numbers, so preparing a folder from the other format is refused
unless ``force`` replaces it; :func:`describe` tells a runner which one a task reads.

The tasks' loader (:func:`load`) reads this cache: the ``data_dir`` a runner passes to it (``pebench
run --data-dir``) is the **cache** folder (``--cache-dir`` of ``pebench prepare``), not the raw
data; ``None`` means :func:`default_cache_dir`. A missing cache raises :class:`CacheMissingError`
with the ``pebench prepare`` command to run.

Checks, at prepare and again at load: split sizes against the task spec, labels in
``0..C-1`` (and, at prepare, every class present in the dataset; exactly ``k`` images per class in
a ``k``-shot list), no image shared between the training-side splits and the test split (by
decoded-pixel hash; inherent duplicates are allowed only for tasks declaring
``TaskSpec.known_overlap`` or with ``allow_overlap``, and recorded), and at load the SHA-256 of
every array against the manifest. Failures raise :class:`CacheError` naming task, split and what
differs.

Why one module of this size: preparing and loading are the two halves of one on-disk contract
(folder layout, manifest schema, split and task entries, overlap record, identity hashes). The
writer and the reader share every private helper that defines it (:func:`_task_entry`,
:func:`_role_parts`, :func:`_overlap`, :func:`_read_manifest`...), and keeping them in one file
keeps a change to the contract in one place; the source readers live in
:mod:`pebench.datasets.sources` and :mod:`pebench.datasets.formats`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
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


class CacheError(DatasetError):
    """A cache that does not match its task spec or manifest (names task, split, difference)."""


class CacheMissingError(CacheError):
    """No prepared cache for a task at this image size; the message says what to run."""


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


def _decode_split(
    sl: Split, out_dir: Path, image_size: int, workers: int, progress: bool
) -> tuple[np.ndarray, int]:
    """Decode a split into ``out_dir``; returns its digests and the number of decodes."""
    n = len(sl.labels)
    images = np.lib.format.open_memmap(
        out_dir / f"{sl.name}.images.npy",
        mode="w+",
        dtype=np.uint8,
        shape=(n, image_size, image_size, 3),
    )
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


def _read_manifest(path: Path) -> dict | None:
    try:
        m = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("schema") == SCHEMA else None


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


def _install(tmp: Path, final: Path) -> None:
    """Move a finished folder into place; an old one is swapped out, then removed."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".old-{final.name}-"))
        os.replace(final, old / "x")
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


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
    t0 = time.perf_counter()
    unit = unit_name(specs[0])
    final = cache_path(cache_dir, specs[0], image_size)
    fmt = opts.data_format
    old = _read_manifest(final)
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
    sizes = {s: len(sl.labels) for s, sl in lists.items()}
    if _up_to_date(old, specs, lists, allow_overlap, fmt):
        return UnitReport(unit, final, "up to date", sizes, 0, time.perf_counter() - t0)

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    try:
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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
        prev = (old or {}).get("splits", {}).get(name)
        if prev is not None and _stored_identity(prev) == sl.identity():
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
    if {"train800", "val200", "train800val200"} <= set(lists):
        same = np.array_equal(
            digests["train800val200"],
            np.concatenate([digests["train800"], digests["val200"]]),
        ) and np.array_equal(
            lists["train800val200"].labels,
            np.concatenate([lists["train800"].labels, lists["val200"].labels]),
        )
        note = "equals train800 + val200" if same else "DIFFERS from train800 + val200"
        entries["train800val200"]["notes"] = sorted(
            set(entries["train800val200"]["notes"]) | {f"{note} (images and labels)"}
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
        CacheError: the cache was prepared for another version or split definition.
    """
    cache_dir = Path(cache_dir)
    folder = cache_path(cache_dir, spec, image_size)
    manifest = _read_manifest(folder)
    if manifest is None or spec.name not in manifest["tasks"]:
        have = _sizes(folder.parent)
        what = "no task entry in" if manifest is not None else "no prepared cache at"
        raise CacheMissingError(
            f"task {spec.name!r}: {what} {folder} (image size {image_size}"
            + (f"; prepared sizes: {', '.join(have)}" if have else "")
            + f"). Run: {_prepare_command(spec, cache_dir, image_size)}"
        )
    entry = manifest["tasks"][spec.name]
    if entry.get("data_format") not in spec.data_formats:
        raise CacheError(
            f"task {spec.name!r}: cache {folder} has data format {entry.get('data_format')!r}, "
            f"the task reads {' or '.join(map(repr, spec.data_formats))}; re-run with --force: "
            f"{_prepare_command(spec, cache_dir, image_size)}"
        )
    for key, want in _task_entry(spec, entry["data_format"]).items():
        if entry.get(key) != want:
            raise CacheError(
                f"task {spec.name!r}: cache {folder} has {key} {entry.get(key)!r}, the task "
                f"spec says {want!r}; re-run with --force: "
                f"{_prepare_command(spec, cache_dir, image_size)}"
            )
    return manifest


def _sizes(unit_dir: Path) -> list[str]:
    """Prepared size folders (``"224px"``...) of a unit, smallest first."""
    if not unit_dir.is_dir():
        return []
    found = [p.name for p in unit_dir.iterdir() if _SIZE_DIR.match(p.name)]
    return sorted(found, key=lambda n: int(n[:-2]))


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
    dig = np.load(folder / f"{name}.digests.npy")
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
    manifest = read_manifest(cache_dir, spec, image_size)
    folder = cache_path(cache_dir, spec, image_size)
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
LOADER = Loader(load=load, describe=describe, verified_sha256=verified_sha256)


__all__ = [
    "LOADER",
    "CacheError",
    "CacheMissingError",
    "RESIZE",
    "RESIZE_ARRAYS",
    "SourceOptions",
    "UnitReport",
    "array_sha256",
    "cache_path",
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
