"""The embedded demo suite: small VTAB-like tasks generated procedurally, no download.

Every image is drawn with numpy from a seed derived from (task, split), so the data are identical
on every machine and run; the SHA-256 of the generated arrays is recorded on every result row.

==================  ==========  =========================================================  ===
task                group       what decides the label                                      C
==================  ==========  =========================================================  ===
demo/shapes         natural     shape of one object: disk, square, triangle, cross          4
demo/texture        natural     texture: horizontal, vertical, diagonal stripes, checks,    5
                                dots
demo/count          structured  number of disks (1-4), like VTAB clevr_count                4
demo/orientation    structured  orientation of a bar, 6 bins of 30°, like dsprites_ori      6
==================  ==========  =========================================================  ===

Splits mirror VTAB-1k at a smaller scale: ``train`` (320), ``val`` (80), ``trainval`` (the two
concatenated, 400) and ``test`` (400). Classes are balanced in every split.

The ``demo-ref`` suite has the same four tasks (same generators, same training images) with the
sizes a reference table needs: its search scores a separate selection set of 400 images
(``select``: scored, never trained on, by searches or finals) and its finals train on the same
``trainval`` (400) and score a 2,000-image test set (``test2k``). With 80 validation and 400 test
images one validation image is 1.25 pts of a selection and the binomial noise of a task mean is
2-2.5 pts; 5x more images shrink both by sqrt(5).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from pebench.datasets.spec import Loader, Suite, TaskSpec, array_sha256, register_suite

GENERATOR_VERSION = "1"
SIZES = {"train": 320, "val": 80, "test": 400, "select": 400, "test2k": 2000}
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "select": 3, "test2k": 4}
#: the reference suite's roles: search on train -> select, finals on trainval -> test2k
REF_SPLITS = {"train": "train", "val": "select", "trainval": "trainval", "test": "test2k"}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size) + 0.5) / size
    return np.meshgrid(c, c, indexing="xy")


def _canvas(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(0, 90, size=3)
    img = np.broadcast_to(base, (size, size, 3)).astype(np.float64)
    return img + rng.normal(0, 10, size=(size, size, 3))


def _paint(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    color = rng.uniform(140, 255, size=3)
    img[mask] = color


def _shape_mask(
    kind: int, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float
) -> np.ndarray:
    dx, dy = xx - cx, yy - cy
    if kind == 0:  # disk
        return dx**2 + dy**2 <= r**2
    if kind == 1:  # square
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    if kind == 2:  # triangle, apex up
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    # cross
    w = r * 0.3
    return ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))


def _shapes(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    xx, yy = _grid(size)
    img = _canvas(rng, size)
    r = rng.uniform(0.18, 0.3)
    cx, cy = rng.uniform(r, 1 - r, size=2)
    _paint(img, _shape_mask(label, xx, yy, cx, cy, r), rng)
    return img


def _texture(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    xx, yy = _grid(size)
    freq = rng.uniform(3.0, 6.0)
    phase = rng.uniform(0, 1)
    if label == 0:
        on = np.sin(2 * np.pi * (yy * freq + phase)) > 0
    elif label == 1:
        on = np.sin(2 * np.pi * (xx * freq + phase)) > 0
    elif label == 2:
        on = np.sin(2 * np.pi * ((xx + yy) * freq / 1.4 + phase)) > 0
    elif label == 3:
        on = (np.sin(2 * np.pi * xx * freq) > 0) ^ (np.sin(2 * np.pi * (yy * freq + phase)) > 0)
    else:
        gx = np.mod(xx * freq + phase, 1.0) - 0.5
        gy = np.mod(yy * freq + phase, 1.0) - 0.5
        on = gx**2 + gy**2 < 0.09
    img = _canvas(rng, size)
    _paint(img, on, rng)
    return img


def _count(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    xx, yy = _grid(size)
    img = _canvas(rng, size)
    r = 0.09
    centers: list[np.ndarray] = []
    while len(centers) < label + 1:
        c = rng.uniform(r, 1 - r, size=2)
        if all(np.hypot(*(c - o)) > 2.4 * r for o in centers):
            centers.append(c)
    for cx, cy in centers:
        _paint(img, (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2, rng)
    return img


def _orientation(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    xx, yy = _grid(size)
    img = _canvas(rng, size)
    angle = np.deg2rad(rng.uniform(label * 30.0 + 3, label * 30.0 + 27))
    cx, cy = rng.uniform(0.35, 0.65, size=2)
    along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    _paint(img, (np.abs(along) <= 0.3) & (np.abs(across) <= 0.06), rng)
    return img


_GENERATORS = {
    "shapes": (_shapes, 4, "natural", "shape of one object (disk, square, triangle, cross)"),
    "texture": (_texture, 5, "natural", "texture class (3 stripe directions, checks, dots)"),
    "count": (_count, 4, "structured", "number of disks, 1-4 (like clevr_count)"),
    "orientation": (
        _orientation,
        6,
        "structured",
        "bar orientation in 30° bins (like dsprites_ori)",
    ),
}
_TASK_IDS = {name: i for i, name in enumerate(_GENERATORS)}


def generate(task: str, split: str, image_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Draw one split of one demo task.

    Args:
        task: short task name (``"shapes"``...).
        split: ``"train"``, ``"val"``, ``"trainval"``, ``"test"``, ``"select"`` or ``"test2k"``.
        image_size: side length in pixels.

    Returns:
        ``(images, labels)``: uint8 array ``(N, H, W, 3)`` and int64 labels.
    """
    if split == "trainval":
        a, la = generate(task, "train", image_size)
        b, lb = generate(task, "val", image_size)
        return np.concatenate([a, b]), np.concatenate([la, lb])
    fn, num_classes, _, _ = _GENERATORS[task]
    n = SIZES[split]
    rng = np.random.default_rng([int(GENERATOR_VERSION), _TASK_IDS[task], _SPLIT_IDS[split]])
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    images = np.stack([fn(rng, int(y), image_size) for y in labels])
    return np.clip(images, 0, 255).round().astype(np.uint8), labels


def load(
    spec: TaskSpec, split: str, data_dir: str | Path | None, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read a demo split (``LOADER.load``); ``data_dir`` is ignored."""
    return generate(spec.name.split("/", 1)[1], split, image_size)


@functools.cache
def _manifest_hash(task: str, image_size: int, splits: tuple[str, ...]) -> str:
    """Hash over a demo task's generated splits (fixed by the code: computed once a process)."""
    digest = [array_sha256(*generate(task, s, image_size)) for s in splits]
    return hashlib.sha256(" ".join(digest).encode()).hexdigest()[:16]


def describe(spec: TaskSpec, data_dir: str | Path | None, image_size: int) -> tuple[str, str]:
    """``(data_format, manifest hash)`` of a demo task: a hash over the splits it reads."""
    del data_dir  # generated, never read
    splits = tuple(s for s in dict.fromkeys(spec.splits.values()) if s != "trainval")
    return spec.data_format, _manifest_hash(spec.name.split("/", 1)[1], image_size, splits)


#: the demo family's loader: generated arrays, described by a hash over them
LOADER = Loader(load=load, describe=describe)


_SPECS = [
    TaskSpec(
        name=f"demo/{name}",
        suite="demo",
        group=group,
        num_classes=num_classes,
        version=f"demo-{GENERATOR_VERSION}",
        data_format="procedural",
        splits={"train": "train", "val": "val", "trainval": "trainval", "test": "test"},
        loader="pebench.datasets.demo:LOADER",
        description=desc,
        sizes={**SIZES, "trainval": SIZES["train"] + SIZES["val"]},
    )
    for name, (_, num_classes, group, desc) in _GENERATORS.items()
]

register_suite(
    Suite(
        name="demo",
        tasks=tuple(s.name for s in _SPECS),
        aggregate="mean",
        default_budget="demo-v4",
        description="embedded procedural tasks, no download (VTAB-like in spirit)",
    ),
    _SPECS,
)

_REF_SPECS = [
    replace(
        spec,
        name=spec.name.replace("demo/", "demo-ref/"),
        suite="demo-ref",
        version=f"demo-ref-{GENERATOR_VERSION}",
        splits=REF_SPLITS,
        sizes={s: n for s, n in {**SIZES, "trainval": 400}.items() if s in REF_SPLITS.values()},
    )
    for spec in _SPECS
]
register_suite(
    Suite(
        name="demo-ref",
        tasks=tuple(s.name for s in _REF_SPECS),
        aggregate="mean",
        default_budget="demo-ref-v2",
        description="the demo tasks sized for a reference table: search scored on 400 selection "
        "images, finals on 2,000 test images (training images as in demo)",
    ),
    _REF_SPECS,
)
