"""VTAB-1k read from tensorflow-datasets builders, as ``google-research/task_adaptation`` does.

``pebench prepare vtab --source tfds --data-dir <TFDS data_dir>`` reads each task's TFDS builder
(name and version pattern as task_adaptation pins them, :data:`TASKS`), slices the VTAB-1k splits
with task_adaptation's split strings (:func:`split_strings`; the "90 % of train" style boundaries
are integer arithmetic on the builder's ``num_examples``), reads them in file order
(``shuffle_files=False``, and files read one after another, so examples come in index order and
``train[:800]+validation[:200]`` is train800 followed by val200) and applies the task's label rule
(:data:`LABEL_RULES`) and channel rule (grayscale tiled to RGB; dSprites' 0/1 pixels times 255). The
cache (:mod:`pebench.datasets.cache`) then resizes the TFDS-decoded arrays with the same PIL bicubic
rule as NOAH JPEGs.

Needs TensorFlow and tensorflow-datasets (``pip install 'pebench[tfds]'``), imported only here and
only when a TFDS source is read. The network is never used unless asked: data missing from
``data_dir`` is an error naming builder, version and folder, except that ``manual_dir`` builds the
manual-download builders (resisc45, diabetic_retinopathy) from archives already on disk and
``download=True`` (``pebench prepare --download``) lets TFDS download and build anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pebench.datasets.formats import ArraySplit, DatasetError
from pebench.datasets.spec import TaskSpec

INSTALL_HINT = "pip install 'pebench[tfds]' (TensorFlow and tensorflow-datasets)"
#: thresholds of task_adaptation's distance bins (label = last index whose threshold < value)
CLEVR_DIST_BINS = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)
KITTI_DIST_BINS = (-100.0, 8.0, 20.0, 999.0)
KITTI_NO_VEHICLE = 1000.0
STORED = ("train800", "val200", "train800val200", "test")


class TfdsError(DatasetError):
    """TFDS missing, a builder not prepared, or data that break a task's rules."""


@dataclass(frozen=True)
class TfdsTask:
    """How one VTAB-1k task is read from TFDS (task_adaptation's definition).

    Attributes:
        builder: TFDS name with config (``"eurosat/rgb"``).
        versions: accepted versions or patterns, tried in order (``("3.*.*",)``).
        label: key of :data:`LABEL_RULES`.
        val: ``"validation"`` or ``"test"`` (val200 = its first 200), or ``p``: val200 starts at
            ``p * n // 100`` of ``train`` (``n`` = train examples).
        test: a split string, or ``(a, b)``: ``train[a * n // 100 + b * n // 100:]``.
        channels: ``"rgb"``, ``"gray"`` (tile to 3) or ``"gray255"`` (tile, times 255).
        image_key: the image feature.
        manual: the builder needs a manual download (``manual_dir``).
    """

    builder: str
    versions: tuple[str, ...]
    label: str
    val: str | int
    test: str | tuple[int, int]
    channels: str = "rgb"
    image_key: str = "image"
    manual: bool = False


def _t(builder: str, version: str, val: str | int, test: str | tuple[int, int], **kw) -> TfdsTask:
    return TfdsTask(builder, tuple(version.split("|")), kw.pop("label", "label"), val, test, **kw)


_G255, _HALF = "gray255", "test[50%:]"
#: NOAH folder (= task id suffix) -> its TFDS definition (task_adaptation/data/*.py)
TASKS: dict[str, TfdsTask] = {
    "cifar": _t("cifar100", "3.*.*", 90, "test"),
    "caltech101": _t("caltech101", "3.*.*", 90, "test"),
    "dtd": _t("dtd", "3.*.*", "validation", "test"),
    "oxford_flowers102": _t("oxford_flowers102", "2.*.*", "validation", "test"),
    "oxford_iiit_pet": _t("oxford_iiit_pet", "3.*.*", 80, "test"),
    "svhn": _t("svhn_cropped", "3.*.*", 90, "test"),
    "sun397": _t("sun397/tfds", "4.*.*", "validation", "test"),
    "patch_camelyon": _t("patch_camelyon", "2.*.*", "validation", "test"),
    "eurosat": _t("eurosat/rgb", "2.*.*", 60, (60, 20)),
    "resisc45": _t("resisc45", "3.*.*", 60, (60, 20), manual=True),
    "diabetic_retinopathy": _t(
        "diabetic_retinopathy_detection/btgraham-300", "3.*.*", "validation", "test", manual=True
    ),
    "clevr_count": _t("clevr", "3.*.*", 90, "validation", label="clevr_count"),
    "clevr_dist": _t("clevr", "3.*.*", 90, "validation", label="clevr_dist"),
    "dmlab": _t("dmlab", "2.0.1", "validation", "test"),
    # task_adaptation pins 3.1.0 (no longer buildable); VPT and NOAH use 3.2.0 (same data)
    "kitti": _t("kitti", "3.1.0|3.2.0", "validation", "test", label="kitti_dist"),
    "dsprites_loc": _t("dsprites", "2.*.*", 80, (80, 10), label="dsprites_loc", channels=_G255),
    "dsprites_ori": _t("dsprites", "2.*.*", 80, (80, 10), label="dsprites_ori", channels=_G255),
    "smallnorb_azi": _t("smallnorb", "2.*.*", "test", _HALF, label="azimuth", channels="gray"),
    "smallnorb_ele": _t("smallnorb", "2.*.*", "test", _HALF, label="elevation", channels="gray"),
}


# ------------------------------------------------------------------------------ labels --
def _bin(value: float, thresholds: tuple[float, ...]) -> int:
    """Largest index ``i`` with ``thresholds[i] < value`` (-1 if none): task_adaptation's bins."""
    return int(np.count_nonzero(np.asarray(thresholds, np.float32) < np.float32(value))) - 1


def clevr_count(ex: Mapping[str, Any]) -> int:
    """Number of objects minus 3 (CLEVR scenes hold 3-10 objects)."""
    return len(ex["objects"]["size"]) - 3


def clevr_dist(ex: Mapping[str, Any]) -> int:
    """Bin of the smallest object depth, ``min(pixel_coords[:, 2])``, in :data:`CLEVR_DIST_BINS`."""
    return _bin(float(np.min(ex["objects"]["pixel_coords"][:, 2])), CLEVR_DIST_BINS)


def kitti_dist(ex: Mapping[str, Any]) -> int:
    """Bin of the closest vehicle's depth (types 0-2: car, van, truck; 1000 if none)."""
    objects = ex["objects"]
    depth = np.asarray(objects["location"], np.float32).reshape(-1, 3)[:, 2]
    vehicles = depth[np.asarray(objects["type"]) < 3]
    return _bin(float(np.min(vehicles, initial=KITTI_NO_VEHICLE)), KITTI_DIST_BINS)


def _regroup(key: str, original: int, classes: int = 16) -> Callable[[Mapping[str, Any]], int]:
    """``floor(value / (original / classes))`` in integers (exact for 32 -> 16 and 40 -> 16)."""

    def rule(ex: Mapping[str, Any]) -> int:
        return int(ex[key]) * classes // original

    rule.__doc__ = f"``{key}`` ({original} values) regrouped into {classes} classes."
    return rule


def _key(key: str) -> Callable[[Mapping[str, Any]], int]:
    def rule(ex: Mapping[str, Any]) -> int:
        return int(ex[key])

    rule.__doc__ = f"The ``{key}`` feature."
    return rule


#: label rule name -> example (numpy features) -> label
LABEL_RULES: dict[str, Callable[[Mapping[str, Any]], int]] = {
    "label": _key("label"),
    "clevr_count": clevr_count,
    "clevr_dist": clevr_dist,
    "kitti_dist": kitti_dist,
    "dsprites_loc": _regroup("label_x_position", 32),
    "dsprites_ori": _regroup("label_orientation", 40),
    "azimuth": _key("label_azimuth"),
    "elevation": _key("label_elevation"),
}
#: class-label features whose number of values a rule relies on
_RULE_FEATURES = {
    "dsprites_loc": ("label_x_position", 32),
    "dsprites_ori": ("label_orientation", 40),
}


def to_rgb(image: np.ndarray, channels: str) -> np.ndarray:
    """Apply a task's channel rule: ``"gray"`` tiles 1 channel to 3, ``"gray255"`` also ×255.

    The multiplication stays in uint8 like task_adaptation's ``tf.tile(image, [1, 1, 3]) * 255``
    (dSprites pixels are 0 or 1).
    """
    image = np.asarray(image)
    if channels == "rgb":
        return image
    if image.ndim != 3 or image.shape[2] != 1:
        return image  # left for the shape check, which names the example
    rgb = np.repeat(image, 3, axis=2)
    return rgb * np.uint8(255) if channels == "gray255" else rgb


# ------------------------------------------------------------------------------ splits --
def split_strings(task: TfdsTask, num_examples: Mapping[str, int]) -> dict[str, str]:
    """task_adaptation's TFDS split strings of the four stored VTAB-1k splits.

    Args:
        task: the task's definition.
        num_examples: TFDS split name -> number of examples (only ``train`` is used, and only
            for carve-outs).

    Raises:
        TfdsError: a carve-out needs ``train``'s size and the builder has no ``train`` split.
    """
    needs_n = isinstance(task.val, int) or not isinstance(task.test, str)
    if needs_n and "train" not in num_examples:
        raise TfdsError(
            f"TFDS builder {task.builder!r} has no 'train' split (splits: "
            f"{', '.join(num_examples) or 'none'}); VTAB needs its size to carve out val/test"
        )
    n = num_examples.get("train", 0)
    if isinstance(task.val, int):
        start = task.val * n // 100
        val200 = f"train[{start}:{start + 200}]"
    else:
        val200 = f"{task.val}[:200]"
    if isinstance(task.test, str):
        test = task.test
    else:
        a, b = task.test
        test = f"train[{a * n // 100 + b * n // 100}:]"
    return {
        "train800": "train[:800]",
        "val200": val200,
        "train800val200": f"train[:800]+{val200}",
        "test": test,
    }


# ----------------------------------------------------------------------------- reading --
def import_tfds() -> Any:
    """``tensorflow_datasets``, or :class:`TfdsError` with the install hint."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise TfdsError(f"--source tfds needs tensorflow-datasets: {INSTALL_HINT} ({err})") from err
    return tfds


def task_of(spec: TaskSpec) -> TfdsTask:
    """The TFDS definition of a VTAB-1k task.

    Raises:
        TfdsError: the task has no TFDS definition.
    """
    folder = spec.name.split("/")[-1]
    if spec.suite != "vtab" or folder not in TASKS:
        raise TfdsError(f"task {spec.name!r} has no TFDS definition (VTAB-1k tasks only)")
    return TASKS[folder]


def _missing(task: TfdsTask, spec: TaskSpec, data_dir: Path, tried: list[str]) -> TfdsError:
    hint = (
        "pass --manual-dir <folder with the manually downloaded files> to build it there "
        "(no network)"
        if task.manual
        else f"build it first (tfds build {task.builder} --data_dir {data_dir}), or pass "
        f"--download to let TFDS download and build it (network)"
    )
    return TfdsError(
        f"task {spec.name!r}: TFDS builder {task.builder!r} version "
        f"{' or '.join(task.versions)} is not prepared in data_dir {data_dir} ("
        + "; ".join(tried)
        + f"); {hint}"
    )


def open_builder(
    spec: TaskSpec,
    data_dir: str | Path,
    manual_dir: str | Path | None = None,
    download: bool = False,
) -> Any:
    """The prepared TFDS builder of ``spec`` in ``data_dir`` (first accepted version found).

    A builder missing from ``data_dir`` is built with ``download_and_prepare`` only when
    ``download`` is set, or when it needs a manual download and ``manual_dir`` is given (then
    nothing is fetched from the network).

    Raises:
        TfdsError: TFDS not installed, or the builder not prepared (names builder, versions,
            ``data_dir`` and how to prepare it).
    """
    tfds = import_tfds()
    task, data_dir = task_of(spec), Path(data_dir)
    tried, unprepared = [], []
    for version in task.versions:
        name = f"{task.builder}:{version}"
        try:
            builder = tfds.builder(name, data_dir=str(data_dir))
        except Exception as err:
            tried.append(f"{name}: {str(err).splitlines()[0][:200]}")
            continue
        if builder.is_prepared():
            _check_features(builder, task, spec)
            return builder
        tried.append(f"{name}: not found")
        unprepared.append(builder)
    if unprepared and (download or (manual_dir is not None and task.manual)):
        builder = unprepared[0]
        config = tfds.download.DownloadConfig(
            manual_dir=str(manual_dir) if manual_dir is not None else None,
            try_download_gcs=False,
        )
        builder.download_and_prepare(download_config=config)
        _check_features(builder, task, spec)
        return builder
    raise _missing(task, spec, data_dir, tried)


def _check_features(builder: Any, task: TfdsTask, spec: TaskSpec) -> None:
    features = builder.info.features
    if task.image_key not in features:
        raise TfdsError(
            f"task {spec.name!r}: TFDS builder {builder.info.full_name} has no image feature "
            f"{task.image_key!r} (features: {', '.join(features)})"
        )
    if task.label in _RULE_FEATURES:
        key, n = _RULE_FEATURES[task.label]
        got = getattr(features[key], "num_classes", None) if key in features else None
        if got != n:
            raise TfdsError(
                f"task {spec.name!r}: TFDS feature {key!r} of {builder.info.full_name} has "
                f"{got} classes, the VTAB rule {task.label!r} expects {n}"
            )


def _skip_images(tfds: Any, builder: Any, keep: str | None) -> dict[str, Any]:
    """Decoders skipping every top-level image feature except ``keep``."""
    image = tfds.features.Image
    return {
        k: tfds.decode.SkipDecoding()
        for k, f in builder.info.features.items()
        if isinstance(f, image) and k != keep
    }


def read_split(builder: Any, spec: TaskSpec, name: str, split: str) -> ArraySplit:
    """One stored split: labels now (images not decoded), images later from ``stream()``.

    Args:
        builder: a prepared TFDS builder (:func:`open_builder`).
        spec: the task.
        name: stored split name (``"val200"``).
        split: the TFDS split string (:func:`split_strings`).

    Raises:
        TfdsError: a label rule fails on an example (names builder, split and index).
    """
    tfds = import_tfds()
    task = task_of(spec)
    rule = LABEL_RULES[task.label]
    full = builder.info.full_name
    where = f"TFDS {full} split {split!r}"

    def example(i: int) -> str:
        return f"{where} example {i}"

    def dataset(keep: str | None) -> Any:
        ds = builder.as_dataset(
            split=split,
            shuffle_files=False,
            decoders=_skip_images(tfds, builder, keep),
            read_config=tfds.ReadConfig(interleave_cycle_length=1),  # files one after another
        )
        return tfds.as_numpy(ds)

    labels = []
    for i, ex in enumerate(dataset(None)):
        try:
            labels.append(rule(ex))
        except (KeyError, ValueError, TypeError, IndexError) as err:
            raise TfdsError(
                f"task {spec.name!r}: label rule {task.label!r} failed on {example(i)}: {err!r}"
            ) from err

    def stream() -> Iterator[np.ndarray]:
        for ex in dataset(task.image_key):
            yield to_rgb(ex[task.image_key], task.channels)

    source = {
        "builder": task.builder,
        "version": str(builder.version),
        "version_pattern": " or ".join(task.versions),
        "split": split,
        "label_rule": task.label,
        "image_key": task.image_key,
        "channels": task.channels,
    }
    return ArraySplit(
        name=name,
        labels=np.asarray(labels, dtype=np.int64),
        stream=stream,
        source=source,
        origin_text=f"{where} in {builder.data_dir}",
        example=example,
    )


def read_splits(
    spec: TaskSpec,
    data_dir: str | Path,
    names: list[str],
    manual_dir: str | Path | None = None,
    download: bool = False,
) -> tuple[dict[str, ArraySplit], dict[str, Any]]:
    """The cache's reader for ``--source tfds``: stored splits of one task, and manifest facts.

    Returns:
        ``(splits, info)``: split name -> :class:`ArraySplit`; ``info["reader"]`` (tfds and
        TensorFlow versions, data_dir) goes to the manifest's ``source``, ``info["tasks"]``
        (builder, version, split strings per task) into its task entries.

    Raises:
        TfdsError: TFDS missing, builder not prepared, an unknown split name, or a label
            rule failing.
    """
    builder = open_builder(spec, data_dir, manual_dir, download)
    counts = {k: int(v.num_examples) for k, v in builder.info.splits.items()}
    strings = split_strings(task_of(spec), counts)
    unknown = [n for n in names if n not in strings]
    if unknown:
        raise TfdsError(
            f"task {spec.name!r}: no TFDS split string for {', '.join(unknown)} "
            f"(VTAB-1k stores {', '.join(STORED)})"
        )
    tfds = import_tfds()
    import tensorflow as tf

    info = {
        "reader": {
            "library": "tensorflow-datasets",
            "tfds_version": tfds.__version__,
            "tensorflow_version": tf.__version__,
            "data_dir": str(Path(data_dir).resolve()),
            "manual_dir": str(manual_dir) if manual_dir is not None else None,
        },
        "tasks": {
            spec.name: {
                "tfds": {
                    "builder": task_of(spec).builder,
                    "version": str(builder.version),
                    "num_examples": counts,
                    "splits": {n: strings[n] for n in STORED},
                    "label_rule": task_of(spec).label,
                }
            }
        },
    }
    return {n: read_split(builder, spec, n, strings[n]) for n in names}, info


__all__ = [
    "CLEVR_DIST_BINS",
    "INSTALL_HINT",
    "KITTI_DIST_BINS",
    "LABEL_RULES",
    "STORED",
    "TASKS",
    "TfdsError",
    "TfdsTask",
    "clevr_count",
    "clevr_dist",
    "import_tfds",
    "kitti_dist",
    "open_builder",
    "read_split",
    "read_splits",
    "split_strings",
    "task_of",
    "to_rgb",
]
