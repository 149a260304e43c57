"""The prepare pipeline: check the request and the split lists, decode, store and install.

:func:`pebench.datasets.cache.prepare` checks the request here (source, formats, task folders
present), then prepares the units all or nothing (:func:`_prepare_units`): under each unit's
lock it reads the split lists, checks them before anything is decoded (sizes, label range,
classes, k-shot counts, ``train800val200`` = ``train800`` + ``val200``), stops early when the
cache is up to date, else decodes the changed splits (unchanged ones are hard-linked), checks
train/test overlap and writes the manifest into a temp folder; only when every unit got that
far are the folders installed, so a refused prepare leaves the cache folder as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pebench.datasets.cache_decode import _decode_split
from pebench.datasets.cache_errors import CacheError
from pebench.datasets.cache_layout import (
    _role_parts,
    _test,
    _train_side,
    cache_path,
    components,
    unit_name,
)
from pebench.datasets.cache_manifest import (
    _manifest,
    _overlap,
    _reusable_manifest,
    _reused,
    _split_entry,
    _stored_identity,
    _task_entry,
    base_format,
    recorded_format,
)
from pebench.datasets.cache_store import (
    _check_space,
    _fsync_files,
    _install,
    _installed,
    _link,
    _new_folders,
    _os_error,
    _remove_empty,
    _tidy,
    _unit_lock,
)
from pebench.datasets.formats import manifest_json
from pebench.datasets.sources import (
    RESIZE,
    SOURCES,
    Source,
    SourceOptions,
    SourceSplit,
    source_for,
    source_of,
)
from pebench.datasets.spec import ROLES, TaskSpec
from pebench.fsio import umask

_ALLOWED = "allow_overlap=True"


# ------------------------------------------------------------------------ one unit --
@dataclass
class UnitReport:
    """What :func:`~pebench.datasets.cache.prepare` did for one cache folder.

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
) -> tuple[dict[str, SourceSplit], dict[str, Any]]:
    """The unit's splits and facts about the reader for the manifest's ``source`` entry."""
    source = source_for(opts.data_format)
    if source is None:
        raise CacheError(f"task {specs[0].name!r}: no reader for data format {opts.data_format!r}")
    return source.read(specs, data_dir, splits, opts)


def _listed_sizes(spec: TaskSpec, lists: dict[str, SourceSplit]) -> dict[str, int]:
    """The size of each of ``spec``'s size-checked splits as listed (components summed)."""
    return {
        split: sum(len(lists[c].labels) for c in components(split))
        for split in spec.sizes
        if all(c in lists for c in components(split))
    }


def _check_lists(
    specs: list[TaskSpec], lists: dict[str, SourceSplit], nonstandard_sizes: bool = False
) -> None:
    """Sizes, label range, class presence and k-shot counts, before anything is decoded.

    ``nonstandard_sizes`` accepts split sizes other than the task's (recorded by the caller).
    """
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
            if split in spec.sizes and n != spec.sizes[split] and not nonstandard_sizes:
                files = ", ".join(lists[c].origin() for c in components(split))
                notes = "; ".join(x for c in components(split) for x in lists[c].notes)
                raise CacheError(
                    f"task {spec.name!r}, split {split!r}: {n} examples listed in {files}, "
                    f"expected {spec.sizes[split]}" + (f" ({notes})" if notes else "") + "; "
                    "--nonstandard-sizes prepares it anyway, recorded as non-standard"
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
    unit: str, lists: dict[str, SourceSplit], digests: dict[str, np.ndarray] | None = None
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


def _up_to_date(
    manifest: dict | None,
    specs: list[TaskSpec],
    lists: dict[str, SourceSplit],
    allow: bool,
    data_format: str,
) -> bool:
    if manifest is None:
        return False
    for name, sl in lists.items():
        if _stored_identity(manifest["splits"].get(name)) != sl.identity():
            return False
    recorded = manifest["tasks"]
    nonstandard = base_format(data_format) != data_format
    for s in specs:
        entry = recorded.get(s.name)
        wanted = _task_entry(s, data_format, _listed_sizes(s, lists) if nonstandard else None)
        if entry is None or any(entry.get(k) != v for k, v in wanted.items()):
            return False
        if entry["overlap"]["allowed"] == _ALLOWED and not allow:
            return False  # accepted with --allow-overlap before; check again without it
    return True


def _check_lineage(existing: dict | None, unit: str, final: Path, data_format: str) -> None:
    """Refuse to mix a unit prepared from one data format with another (without ``--force``)."""
    if existing is None or existing.get("data_format") == data_format:
        return
    have = existing.get("data_format")
    raise CacheError(
        f"{unit}: the cache {final} was prepared from data format {have!r} (--source "
        f"{source_of(base_format(have))}), not {data_format!r} (--source "
        f"{source_of(base_format(data_format))}); the two "
        f"lineages give different numbers and are never mixed. Use another --cache-dir, or "
        f"--force to replace the {have!r} cache"
    )


def _prepare_units(
    groups: list[list[TaskSpec]],
    data_dir: Path,
    cache_dir: Path,
    image_size: int,
    opts: SourceOptions,
    force: bool,
    allow_overlap: bool,
    workers: int,
    progress: bool,
    nonstandard_sizes: bool = False,
) -> list[UnitReport]:
    """Prepare several cache units all or nothing: each is installed only once all are ready.

    Every unit is locked, checked and decoded into its temp folder first (:func:`_staged`);
    the finished folders are installed only when no unit was refused. A refusal anywhere (a bad
    image in the last unit) thus leaves the cache folder as it was: no unit installed or
    replaced, no temp folder, no lock, and no folder this call created.
    """
    args = (data_dir, cache_dir, image_size, opts, force, allow_overlap, workers, progress)
    with ExitStack() as stack:
        staged = [stack.enter_context(_staged(g, *args, nonstandard_sizes)) for g in groups]
        for unit in staged:
            unit.install()
        return [unit.report for unit in staged]


@dataclass
class _Unit:
    """A unit prepared up to its install: its report, and its finished temp folder (if any)."""

    report: UnitReport
    tmp: Path | None = None
    space: tuple[int, int] | None = None

    def install(self) -> None:
        """Swap the finished folder into place (nothing to do for an up-to-date unit)."""
        if self.tmp is None:
            return
        try:
            _install(self.tmp, self.report.path)
        except OSError as err:
            mapped = _os_error(err, self.report.unit, self.report.path.parent, self.space)
            if mapped is err:
                raise
            raise mapped from err
        self.tmp = None


@contextmanager
def _staged(
    specs: list[TaskSpec],
    data_dir: Path,
    cache_dir: Path,
    image_size: int,
    opts: SourceOptions,
    force: bool,
    allow_overlap: bool,
    workers: int,
    progress: bool,
    nonstandard_sizes: bool = False,
) -> Iterator[_Unit]:
    """One unit locked, earlier litter cleared, and decoded into a temp folder, until exit.

    On exit its temp folder is removed unless it was installed, the lock is released, and
    folders this call created are removed again if nothing got installed in them.
    """
    unit = unit_name(specs[0])
    final = cache_path(cache_dir, specs[0], image_size)
    created = _new_folders(final.parent)
    try:
        with _unit_lock(final.parent, unit) as read_only:
            if read_only is None:
                _tidy(final.parent)
            args = (data_dir, final, image_size, opts, force, allow_overlap, workers, progress)
            staged = _prepare_locked(
                specs, *args, read_only=read_only, nonstandard_sizes=nonstandard_sizes
            )
            try:
                yield staged
            finally:
                if staged.tmp is not None:
                    shutil.rmtree(staged.tmp, ignore_errors=True)
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
    nonstandard_sizes: bool = False,
) -> _Unit:
    """:func:`_staged` once the unit is locked (``read_only``: why it could not be).

    ``nonstandard_sizes``: accept split sizes other than the tasks' and record the cache's data
    format as ``<format>+nonstandard-sizes`` (a lineage of its own).
    """
    t0 = time.perf_counter()
    unit = unit_name(specs[0])
    fmt = recorded_format(opts.data_format, nonstandard_sizes)
    old = _reusable_manifest(_installed(final))
    if not force:
        _check_lineage(old, unit, final, fmt)
    resize = _resize_rule(opts.data_format)
    if force or (old is not None and old.get("resize") != resize):
        old = None  # forced, or decoded by another pipeline: nothing can be reused
    wanted = list(dict.fromkeys(c for s in specs for c in _role_parts(s, ROLES)))
    if old is not None:  # keep splits and tasks prepared earlier (e.g. other few-shot seeds)
        wanted += [s for s in old["splits"] if s not in wanted]
    lists, source_info = _read_lists(specs, data_dir, wanted, opts)
    _check_lists(specs, lists, nonstandard_sizes)
    _check_trainval(unit, lists)
    sizes = {s: len(sl.labels) for s, sl in lists.items()}
    if _up_to_date(old, specs, lists, allow_overlap, fmt):
        return _Unit(UnitReport(unit, final, "up to date", sizes, 0, time.perf_counter() - t0))
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
            if nonstandard_sizes:
                kept[spec.name]["sizes"] = dict(sorted(_listed_sizes(spec, lists).items()))
        manifest = _manifest(unit, fmt, image_size, resize, data_dir, source_info, entries, kept)
        (tmp / "manifest.json").write_text(manifest_json(manifest))
        _fsync_files(tmp)
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp's folder is private: give it the umask's mode
    except BaseException as err:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        mapped = _os_error(err, unit, final.parent, space) if isinstance(err, OSError) else err
        if mapped is err:
            raise
        raise mapped from err
    report = UnitReport(unit, final, "written", sizes, decoded, time.perf_counter() - t0)
    return _Unit(report, tmp, space)


def _resize_rule(data_format: str) -> str:
    """The decode and resize rule of the source reading ``data_format``."""
    source = source_for(data_format)
    return source.resize if source is not None else RESIZE


def _store_splits(
    lists: dict[str, SourceSplit],
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
    lists: dict[str, SourceSplit],
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


# -------------------------------------------------------- the request, before any unit --
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


def _folder_key(name: str) -> str:
    """A folder name without case and punctuation (``CIFAR-100`` -> ``cifar100``)."""
    return "".join(c for c in name.lower() if c.isalnum())


def _misplaced(source: Source, missing: list[TaskSpec], data_dir: Path) -> list[str]:
    """What ``data_dir`` holds instead of the folders of ``missing`` (one hint each).

    ``data_dir`` may itself be a task's folder (its parent is the data folder), or hold a task's
    folder under another name: another case, dashes, or a name other code bases use (the
    task's aliases). Both are recognised by name, ignoring case and punctuation.
    """
    if source.folders is None:
        return []
    try:
        subs = sorted(p.name for p in data_dir.iterdir() if p.is_dir())
    except OSError:  # no such folder: the missing list says enough
        subs = []
    exact = "folder names must match exactly, case included"
    hints: dict[str, None] = {}
    renamed = []
    for spec in missing:
        expected = source.folders(spec)
        names = (*expected, *(n.split("/")[-1] for n in (spec.name, *spec.aliases)))
        keys = {_folder_key(n) for n in names}
        want = " or ".join(map(repr, expected))
        if _folder_key(data_dir.name) in keys:
            rename = "" if data_dir.name in expected else f", named {want} ({exact})"
            hints[
                f"{data_dir} is the folder of {unit_name(spec)}, not the folder holding the "
                f"task folders: pass its parent {data_dir.parent} as --data-dir{rename}"
            ] = None
        renamed += [
            f"{sub!r} where {unit_name(spec)} expects {want}"
            for sub in subs
            if _folder_key(sub) in keys
        ]
    if renamed := list(dict.fromkeys(renamed)):
        them = "them" if len(renamed) > 1 else "it"
        hints[f"found {', '.join(renamed)} ({exact}: rename or link {them})"] = None
    return list(hints)


def _check_present(
    source: Source, specs: list[TaskSpec], data_dir: Path, cache_dir: Path, image_size: int
) -> None:
    """Every selected task's folder must be in ``data_dir`` before anything is prepared.

    Raises:
        CacheError: one line listing the tasks found and missing, and the command preparing
            only the found ones (nothing is prepared unless the user asks for those).
    """
    if source.folders is None:
        return
    found = [s for s in specs if source.present(s, data_dir)]
    if len(found) == len(specs):
        return
    missing = [s for s in specs if s not in found]
    text = (
        f"--data-dir {data_dir} holds the folders of {len(found)} of the {len(specs)} selected "
        f"tasks (--source {source.name}: {source.layout}); missing: {_by_unit(missing)}"
    )
    text += "".join(f"; {hint}" for hint in _misplaced(source, missing, data_dir))
    if found:
        text += (
            f"; found: {_by_unit(found)}. To prepare only those: pebench prepare "
            f"{','.join(s.name for s in found)} --source {source.name} --data-dir {data_dir} "
            f"--cache-dir {cache_dir} --image-size {image_size}"
        )
    raise CacheError(text + " (the layouts are in docs/data.md)")
