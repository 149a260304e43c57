"""Task and suite specs, the loader object, and the raw registry they are added to.

Every data family (:mod:`~pebench.datasets.demo`, :mod:`~pebench.datasets.vtab`...) imports this
module, declares its :class:`TaskSpec` list and calls :func:`register_suite`; nothing here imports
a family, so the families never import each other (lookups live in
:mod:`pebench.datasets.catalog`). Importing this module needs numpy only (no torch).
"""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pebench.registry import RegistryError

#: split roles every task maps to its own split names
ROLES = ("train", "val", "trainval", "test")

#: ``(spec, split, data_dir, image_size) -> (uint8 images (N, H, W, 3), int64 labels)``
LoadFn = Callable[["TaskSpec", str, "str | Path | None", int], tuple[np.ndarray, np.ndarray]]
#: ``(spec, data_dir, image_size) -> (data_format, data manifest hash)``
DescribeFn = Callable[["TaskSpec", "str | Path | None", int], tuple[str, str]]
#: ``(spec, split, data_dir, image_size) -> SHA-256 the loader has verified, or None``
Sha256Fn = Callable[["TaskSpec", str, "str | Path | None", int], "str | None"]
#: ``(spec, data_dir, image_size) -> None``, raising when data a run reads are missing or damaged
CheckFn = Callable[["TaskSpec", "str | Path | None", int], None]


def array_sha256(images: np.ndarray, labels: np.ndarray, chunk: int = 256) -> str:
    """SHA-256 of the uint8 images (in chunks: memory maps stay on disk) then the int64 labels.

    The one data-identity formula: prepared-cache manifests store it, result rows record its
    first 16 hex digits as ``data_hash``.
    """
    h = hashlib.sha256()
    for i in range(0, len(images), chunk):
        h.update(np.ascontiguousarray(images[i : i + chunk]).tobytes())
    h.update(np.ascontiguousarray(np.asarray(labels, dtype=np.int64)).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Loader:
    """How one data family reads its tasks; each family defines one explicitly.

    A task names its family's loader lazily (:attr:`TaskSpec.loader`, ``"module:attribute"``),
    so the registry imports no data code until data are read.

    Attributes:
        load: image families: ``(spec, split, data_dir, image_size) -> (images, labels)``, uint8
            ``(N, H, W, 3)`` and int64 ``(N,)``. ``None`` for video families, whose splits are
            torch datasets built by :func:`pebench.datasets.video.video_split`.
        describe: ``(spec, data_dir, image_size) -> (data_format, data_manifest)`` of the data a
            run reads (prepared caches answer from their manifest, the demo suite hashes its
            generated splits). ``None``: the task's own format and an empty manifest hash.
        verified_sha256: ``(spec, split, data_dir, image_size)`` -> the :func:`array_sha256` of
            a split the loader has just checked (so callers need not hash it again), or ``None``
            when it does not know. ``None``: never known.
        check: ``(spec, data_dir, image_size)``: a cheap check, before any run, that every split
            the task's runs read is there and whole (prepared caches compare file sizes with
            the manifest), raising a :class:`~pebench.datasets.formats.DatasetError` naming the
            split. ``None``: nothing to check.
    """

    load: LoadFn | None = None
    describe: DescribeFn | None = None
    verified_sha256: Sha256Fn | None = None
    check: CheckFn | None = None

    def data_identity(
        self, spec: TaskSpec, data_dir: str | Path | None, image_size: int
    ) -> tuple[str, str]:
        """``(data_format, data_manifest)`` through :attr:`describe`, or the task's defaults."""
        if self.describe is None:
            return spec.data_format, ""
        return self.describe(spec, data_dir, image_size)

    def check_data(self, spec: TaskSpec, data_dir: str | Path | None, image_size: int) -> None:
        """Run :attr:`check` (nothing when the family has none)."""
        if self.check is not None:
            self.check(spec, data_dir, image_size)

    def known_sha256(
        self, spec: TaskSpec, split: str, data_dir: str | Path | None, image_size: int
    ) -> str | None:
        """The verified SHA-256 of ``split`` if the loader knows it, else ``None``."""
        if self.verified_sha256 is None:
            return None
        return self.verified_sha256(spec, split, data_dir, image_size)


@dataclass(frozen=True)
class TaskSpec:
    """One classification task.

    Attributes:
        name: canonical id, ``"<suite>/<task>"``.
        suite: suite the task belongs to.
        group: group inside the suite (VTAB: natural / specialized / structured).
        num_classes: number of classes; labels are ``0 .. num_classes - 1``.
        version: bumped whenever data, splits or evaluation change.
        data_format: how the data is stored ("procedural", "noah-jpeg", "tfds", ...).
        splits: role (see :data:`ROLES`) -> split name (e.g. ``"train" -> "train800"``).
        loader: ``"module:attribute"`` naming the family's :class:`Loader` (imported only when
            data are read). A plain function ``(spec, split, data_dir, image_size)`` is accepted
            too and acts as a :class:`Loader` with only ``load``.
        aliases: other names other code bases use for this task.
        description: one line for ``pebench list tasks``.
        sizes: split name -> number of examples (checked on load).
        modality: ``"image"`` (loader returns arrays, see :mod:`pebench.datasets.cache`) or
            ``"video"`` (splits are built by :func:`pebench.datasets.video.video_split`).
        known_overlap: why identical images in train and test are inherent to the dataset
            (recorded in the prepared cache instead of refused); ``""``: overlap is an error.
        extra_formats: data formats the task may also be prepared from besides
            ``data_format`` (VTAB-1k: ``("tfds",)``).
    """

    name: str
    suite: str
    group: str
    num_classes: int
    version: str
    data_format: str
    splits: dict[str, str]
    loader: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    sizes: dict[str, int] = field(default_factory=dict)
    modality: str = "image"
    known_overlap: str = ""
    extra_formats: tuple[str, ...] = ()

    @property
    def data_formats(self) -> tuple[str, ...]:
        """Formats the task can be prepared from: its own first, then :attr:`extra_formats`."""
        return (self.data_format, *self.extra_formats)

    def get_loader(self) -> Loader:
        """Import and return the task's :class:`Loader`.

        Raises:
            RegistryError: the attribute is neither a :class:`Loader` nor callable.
        """
        module, _, attr = self.loader.partition(":")
        obj: Any = getattr(importlib.import_module(module), attr)
        if isinstance(obj, Loader):
            return obj
        if callable(obj):
            return Loader(load=obj)
        raise RegistryError(f"task {self.name!r}: loader {self.loader!r} is not a Loader")

    def load_fn(self) -> LoadFn:
        """The loader's ``load`` function (image tasks).

        Raises:
            RegistryError: the task's family has no image loader (video tasks).
        """
        fn = self.get_loader().load
        if fn is None:
            raise RegistryError(f"task {self.name!r}: loader {self.loader!r} loads no arrays")
        return fn


@dataclass(frozen=True)
class Suite:
    """A named set of tasks with its aggregation rule.

    Attributes:
        name: suite id (``"demo"``, ``"vtab"``...).
        tasks: canonical task ids in display order.
        aggregate: ``"mean"`` (plain mean of tasks) or ``"vtab"`` (mean of all tasks and mean of
            group means, both reported).
        default_budget: budget id used when ``--budget`` is not given.
        description: one line for ``pebench list suites``.
        aliases: other names for the suite.
    """

    name: str
    tasks: tuple[str, ...]
    aggregate: Literal["mean", "vtab"]
    default_budget: str
    description: str = ""
    aliases: tuple[str, ...] = ()


#: every registered task by canonical name (filled by :func:`register_suite`)
TASKS: dict[str, TaskSpec] = {}
#: every registered suite by name and alias
SUITES: dict[str, Suite] = {}


def register_suite(suite: Suite, tasks: list[TaskSpec]) -> None:
    """Add a suite and its tasks, checked by :func:`check_suite` (built-ins and plugins alike).

    Raises:
        RegistryError: what :func:`check_suite` refuses; nothing is added then.
    """
    check_suite(suite, tasks)
    for spec in tasks:
        TASKS[spec.name] = spec
    for name in [suite.name, *suite.aliases]:
        SUITES[name] = suite


#: what a suite name (or alias) may be made of: ``,`` separates selectors, ``:`` selects a group,
#: ``/`` separates a suite from its task
SUITE_NAME = re.compile(r"[A-Za-z0-9_\-]+")
#: what a task's loader must name
_LOADER_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
#: a task id: ``<suite>/<segment>[/<segment>...]``, each segment starting with a letter or digit
#: (no ``..``, no markup, no spaces: ids become file names, Markdown and LaTeX cells)
TASK_ID = re.compile(r"[A-Za-z0-9_\-]+(/[A-Za-z0-9][A-Za-z0-9_.\-]*)+")
#: a task group (a table column of its own)
GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,39}")
#: free text (descriptions): one line of printable characters
MAX_TEXT = 300


def _check_text(value: Any, where: str) -> None:
    if not isinstance(value, str) or len(value) > MAX_TEXT or not value.isprintable():
        raise RegistryError(f"{where} must be one line of at most {MAX_TEXT} printable characters")


def check_suite(suite: Suite, tasks: Sequence[TaskSpec]) -> None:
    """Refuse what :func:`register_suite` could not add whole, before anything is added.

    Third-party suites (entry-point group ``pebench.suites``) are checked with it, so one bad
    plugin is reported and never leaves half a suite behind.

    Raises:
        RegistryError: one line naming the suite or task, what is wrong and what is allowed.
    """
    if not isinstance(suite, Suite):
        raise RegistryError(f"expected a pebench.datasets.Suite, got {type(suite).__name__}")
    for name in [suite.name, *suite.aliases]:
        if not isinstance(name, str) or not SUITE_NAME.fullmatch(name):
            raise RegistryError(
                f"suite name {name!r} is not usable: letters, digits, '_' and '-' only"
            )
        if name in SUITES:
            raise RegistryError(f"duplicate suite name {name!r}: already registered")
    if suite.aggregate not in ("mean", "vtab"):
        raise RegistryError(
            f"suite {suite.name!r}: aggregate {suite.aggregate!r}; allowed: 'mean', 'vtab'"
        )
    if not suite.tasks or len(set(suite.tasks)) < len(suite.tasks):
        raise RegistryError(f"suite {suite.name!r}: tasks must be a non-empty list of distinct ids")
    specs = list(tasks)
    for spec in specs:
        if not isinstance(spec, TaskSpec):
            raise RegistryError(
                f"suite {suite.name!r}: expected pebench.datasets.TaskSpec objects, got "
                f"{type(spec).__name__}"
            )
    given = [spec.name for spec in specs]
    if len(set(given)) < len(given) or not set(suite.tasks) <= set(given):
        raise RegistryError(
            f"suite {suite.name!r} lists tasks {sorted(suite.tasks)} but gives specs for "
            f"{sorted(given)}: give one TaskSpec per listed task (more specs are tasks of the "
            "suite outside its table, run by id)"
        )
    _check_text(suite.description, f"suite {suite.name!r}: description")
    for spec in specs:
        where = f"task {spec.name!r} of suite {suite.name!r}"
        if not isinstance(spec.name, str) or not TASK_ID.fullmatch(spec.name):
            raise RegistryError(
                f"task id {spec.name!r} of suite {suite.name!r} is not usable: "
                "'<suite>/<name>', names of letters, digits, '_', '-' and '.'"
            )
        if not isinstance(spec.group, str) or not GROUP.fullmatch(spec.group):
            raise RegistryError(
                f"{where}: group {spec.group!r}; allowed: up to 40 letters, digits, '_', '-'"
            )
        _check_text(spec.description, f"{where}: description")
        if not spec.name.startswith(f"{suite.name}/") or spec.suite != suite.name:
            raise RegistryError(
                f"{where}: task ids are '{suite.name}/<task>' and TaskSpec.suite is "
                f"{suite.name!r} (got suite {spec.suite!r})"
            )
        if spec.name in TASKS:
            raise RegistryError(f"duplicate task name {spec.name!r}: already registered")
        if set(spec.splits) != set(ROLES):
            raise RegistryError(f"{where}: splits must map exactly the roles {ROLES}")
        if isinstance(spec.num_classes, bool) or not isinstance(spec.num_classes, int):
            raise RegistryError(f"{where}: num_classes must be an integer >= 2")
        if spec.num_classes < 2:
            raise RegistryError(f"{where}: num_classes must be an integer >= 2")
        if spec.modality not in ("image", "video"):
            raise RegistryError(f"{where}: modality {spec.modality!r}; allowed: 'image', 'video'")
        if not isinstance(spec.loader, str) or not _LOADER_REF.fullmatch(spec.loader):
            raise RegistryError(
                f"{where}: loader {spec.loader!r} must name a Loader as 'module:attribute'"
            )


__all__ = [
    "ROLES",
    "SUITES",
    "TASKS",
    "CheckFn",
    "DescribeFn",
    "LoadFn",
    "Loader",
    "Sha256Fn",
    "Suite",
    "TaskSpec",
    "array_sha256",
    "check_suite",
    "register_suite",
]
