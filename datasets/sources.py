"""The one table of ``pebench prepare --source`` values: data format, reader, help text.

The cache (:func:`pebench.datasets.cache.prepare`) reads a source through :attr:`Source.read`
and records :attr:`Source.data_format` on every cache and result row; the ``pebench prepare``
command line builds its ``--source`` choices and help from :data:`SOURCES`. Adding a source means
adding one row here (and listing its format in the tasks' ``data_format`` / ``extra_formats``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pebench.datasets.formats import (
    COOP_DATASETS,
    VPT_DATASETS,
    ArraySplit,
    SplitList,
    coop_split,
    noah_split,
    vpt_splits,
)
from pebench.datasets.spec import TaskSpec

#: decode rule of sources listing image files
RESIZE = "PIL decode, convert('RGB'), direct resize to (S, S) with Image.BICUBIC"
#: resize rule of sources delivering decoded arrays (TFDS); same PIL resize as :data:`RESIZE`
RESIZE_ARRAYS = (
    "source-decoded uint8 (H, W, 3) array, PIL Image.fromarray, direct resize to (S, S) "
    "with Image.BICUBIC"
)

#: one split of a raw source, before preparation (a listed split or decoded arrays); a
#: prepared split in memory is :class:`pebench.data.Split`
SourceSplit = SplitList | ArraySplit


@dataclass(frozen=True)
class SourceOptions:
    """How a source is read, besides its folder.

    Attributes:
        data_format: the format read (:attr:`Source.data_format` of a row of :data:`SOURCES`).
        manual_dir: TFDS ``manual_dir`` for builders needing manual downloads.
        download: let TFDS download and build missing data (network).
    """

    data_format: str
    manual_dir: Path | None = None
    download: bool = False


#: ``(specs of one cache unit, data_dir, split names, options) -> (splits by name, facts for
#: the manifest: ``"reader"`` -> its ``source`` entry, ``"tasks"`` -> per-task extras)``
ReadFn = Callable[
    [list[TaskSpec], Path, list[str], SourceOptions], tuple[dict[str, SourceSplit], dict[str, Any]]
]


@dataclass(frozen=True)
class Source:
    """One ``--source`` value.

    Attributes:
        name: the ``--source`` value (``"noah"``...).
        data_format: the data format it reads, recorded in caches and result rows.
        read: reads one cache unit's splits (see :data:`ReadFn`).
        help: what the source is, for ``pebench prepare --help``.
        resize: the decode and resize rule recorded in the cache manifest.
        fetch_options: accepts ``manual_dir`` and ``download`` (TFDS).
        folders: ``spec -> names``: the folder names a task's data may have in the data
            folder (:meth:`present`), so ``pebench prepare`` can list what is there and what is
            missing before reading anything. ``None``: not known in advance (TFDS builders).
        layout: where a task's files go, for the missing-folder message.
    """

    name: str
    data_format: str
    read: ReadFn
    help: str
    resize: str = RESIZE
    fetch_options: bool = False
    folders: Callable[[TaskSpec], tuple[str, ...]] | None = None
    layout: str = ""

    def present(self, spec: TaskSpec, data_dir: Path) -> bool:
        """Whether ``data_dir`` holds a folder of ``spec`` (never if :attr:`folders` is None)."""
        names = self.folders(spec) if self.folders is not None else ()
        return any((data_dir / name).is_dir() for name in names)


def _dataset(specs: list[TaskSpec]) -> str:
    return specs[0].name.split("/")[1]


def _noah_folders(spec: TaskSpec) -> tuple[str, ...]:
    return (_dataset([spec]),)


def _named_folders(table: dict[str, tuple]) -> Callable[[TaskSpec], tuple[str, ...]]:
    """``folders`` of a source whose dataset folder may have one of several names."""

    def folders(spec: TaskSpec) -> tuple[str, ...]:
        return tuple(table[_dataset([spec])][0])

    return folders


def _read_noah(specs: list[TaskSpec], data_dir: Path, splits: list[str], opts: SourceOptions):
    return {s: noah_split(data_dir, _dataset(specs), s) for s in splits}, {}


def _read_vpt(specs: list[TaskSpec], data_dir: Path, splits: list[str], opts: SourceOptions):
    return vpt_splits(data_dir, _dataset(specs), splits, specs[0].num_classes), {}


def _read_coop(specs: list[TaskSpec], data_dir: Path, splits: list[str], opts: SourceOptions):
    return {s: coop_split(data_dir, _dataset(specs), s) for s in splits}, {}


def _read_tfds(specs: list[TaskSpec], data_dir: Path, splits: list[str], opts: SourceOptions):
    from pebench.datasets.tfds_source import read_splits  # TFDS itself loads only when read

    return read_splits(specs[0], data_dir, splits, opts.manual_dir, opts.download)


#: ``--source`` name -> its row, in ``--source`` listing order
SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "noah",
            "noah-jpeg",
            _read_noah,
            "NOAH VTAB-1k folders",
            folders=_noah_folders,
            layout="<data-dir>/<task>/{train800,val200,train800val200,test}.txt + images/",
        ),
        Source(
            "json",
            "vpt-json",
            _read_vpt,
            "VPT FGVC json",
            folders=_named_folders(VPT_DATASETS),
            layout="<data-dir>/<dataset folder>/{train,val,test}.json",
        ),
        Source(
            "coop",
            "coop-list",
            _read_coop,
            "CoOp few-shot lists",
            folders=_named_folders(COOP_DATASETS),
            layout="<data-dir>/<dataset folder>/annotations/*.list* + images/",
        ),
        Source(
            "tfds",
            "tfds",
            _read_tfds,
            "VTAB-1k from tensorflow-datasets builders (task_adaptation split strings and "
            "label rules; pip install 'pebench[tfds]')",
            resize=RESIZE_ARRAYS,
            fetch_options=True,
        ),
    )
}


def source_of(data_format: str) -> str:
    """The ``--source`` name reading ``data_format`` (the format itself if none does)."""
    return next((s.name for s in SOURCES.values() if s.data_format == data_format), data_format)


def source_for(data_format: str) -> Source | None:
    """The row reading ``data_format``, if any."""
    return next((s for s in SOURCES.values() if s.data_format == data_format), None)


def help_text() -> str:
    """``--source`` help: every row's name and help, in table order."""
    return "; ".join(f"{s.name}: {s.help}" for s in SOURCES.values())


__all__ = [
    "RESIZE",
    "RESIZE_ARRAYS",
    "SOURCES",
    "ReadFn",
    "Source",
    "SourceOptions",
    "SourceSplit",
    "help_text",
    "source_for",
    "source_of",
]
