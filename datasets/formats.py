"""Readers for the image-list formats users actually have (no torch, PIL only when decoding).

Three list formats, each turned into :class:`SplitList` objects (image paths + labels + where
every entry came from, so errors can name a file and line); sources that decode images
themselves (TFDS, :mod:`pebench.datasets.tfds_source`) deliver :class:`ArraySplit` objects
(labels + an image stream), resized by :func:`array_image` with the same rule:

``noah`` (data format ``"noah-jpeg"``, VTAB-1k as released by NOAH and reused by FacT, SSF...)
    ``<root>/<task folder>/{train800,val200,train800val200,test}.txt``; one line
    ``images/<split>/<6 digits>.jpg <label>``; image paths are relative to the task folder. A
    list naming one image twice is refused (NOAH lists name every image once).

``json`` (``"vpt-json"``, the VPT FGVC splits)
    ``<root>/<dataset folder>/{train,val,test}.json``: an object ``"relative/path.jpg": class id``.
    Image roots follow VPT's ``json_dataset.py``: ``images/`` for CUB and NABirds, ``Images/`` for
    Stanford Dogs (VPT's code; the folder itself is accepted too), the dataset folder for Flowers
    and Cars. Class ids are remapped to ``0..C-1`` in sorted order of the original ids, computed
    over the union of the three files (VPT builds the map per file, which silently shifts labels
    if a file misses a class; on complete files both agree).

``coop`` (``"coop-list"``, the CoOp few-shot lists shipped with NOAH)
    ``<root>/<dataset folder>/annotations/{train_meta.list.num_shot_K.seed_S, val_meta.list,
    test_meta.list}``; one line ``<relative path> <label>``, split on the **last** space (paths
    may contain spaces). Images under ``<dataset folder>/images/`` except Stanford Cars (paths
    start ``cars_train/`` or ``cars_test/`` and are relative to the dataset folder). Repeated
    lines are removed and counted (the oxford-pets 1-shot lists list every image twice).

Every listed image must stay inside its task or dataset folder (:attr:`SplitList.root`): list
paths may not be absolute or use ``..``, and an image that is a symlink resolving outside the folder
is refused when it is decoded (:func:`check_inside`).

Errors are :class:`DatasetError` subclasses whose message names the file and line (list
content), the image path (missing or undecodable images) or the task and split (labels).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pebench.errors import PebenchError


class DatasetError(PebenchError, ValueError):
    """Input data that cannot be read or do not match their task (message says where)."""


class FormatError(DatasetError):
    """A malformed list or JSON file; the message names the file and line."""


class ImageError(DatasetError):
    """A missing or undecodable image; the message names its path."""


@dataclass
class SplitList:
    """One split as listed by its source files.

    Attributes:
        name: split name (``"train800"``, ``"test"``, ``"train_meta.list.num_shot_1.seed_0"``).
        list_file: the file that lists it.
        paths: absolute image paths.
        labels: int64 labels (already remapped for VPT JSON).
        lines: 1-based line of every entry in ``list_file``.
        notes: facts recorded in the cache manifest (removed duplicates, chosen image root...).
        root: the task or dataset folder every image must resolve inside (``None``: no check).
    """

    name: str
    list_file: Path
    paths: list[Path]
    labels: np.ndarray
    lines: list[int]
    notes: list[str] = field(default_factory=list)
    root: Path | None = None

    def where(self, i: int) -> str:
        """Where entry ``i`` comes from (file and line), for error messages."""
        return f"{self.list_file} line {self.lines[i]}"

    def origin(self) -> str:
        """What lists the whole split, for error messages."""
        return str(self.list_file)

    def identity(self) -> str:
        """Hash that changes when the listed split changes (the list file's SHA-256)."""
        return file_sha256(self.list_file)

    def provenance(self, data_dir: Path) -> dict[str, str]:
        """Manifest fields naming the source: list file (relative to ``data_dir``) and hash."""
        try:
            rel = str(self.list_file.relative_to(data_dir))
        except ValueError:
            rel = str(self.list_file)
        return {"list_file": rel, "list_sha256": self.identity()}

    def unique_images(self) -> int:
        """Number of distinct image files listed."""
        return len(set(self.paths))


@dataclass
class ArraySplit:
    """One split whose source delivers decoded images as arrays (TFDS), in split order.

    Attributes:
        name: stored split name (``"train800"``...).
        labels: int64 labels, known before any image is decoded.
        stream: returns an iterator over the split's images, uint8 ``(H, W, 3)``, in order.
        source: facts recorded in the manifest (builder, version, split string...); with the
            labels they make up :meth:`identity`.
        origin_text: the whole split in words, for error messages.
        example: ``i`` -> example ``i`` in words, for error messages.
        notes: facts recorded in the cache manifest.
    """

    name: str
    labels: np.ndarray
    stream: Callable[[], Iterator[np.ndarray]]
    source: dict[str, Any]
    origin_text: str
    example: Callable[[int], str]
    notes: list[str] = field(default_factory=list)

    def where(self, i: int) -> str:
        """Example ``i`` in words."""
        return self.example(i)

    def origin(self) -> str:
        """The split in words."""
        return self.origin_text

    def identity(self) -> str:
        """SHA-256 over :attr:`source` and the labels."""
        h = hashlib.sha256(json.dumps(self.source, sort_keys=True).encode())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return h.hexdigest()

    def provenance(self, data_dir: Path) -> dict[str, Any]:
        """Manifest fields naming the source: :attr:`source` and :meth:`identity`."""
        return {"source": dict(self.source), "source_sha256": self.identity()}

    def unique_images(self) -> int:
        """Every example is its own record."""
        return len(self.labels)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (list files are recorded in the manifest by hash)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_text(path: Path) -> str:
    """A list file's UTF-8 text.

    Raises:
        FormatError: the file is missing or not UTF-8 (names the file).
    """
    if not path.is_file():
        raise FormatError(f"missing list file {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise FormatError(f"{path}: not UTF-8 text ({err})") from err


def manifest_json(obj: dict) -> str:
    """Indented JSON for manifests, with lists of numbers/strings kept on one line."""
    text = json.dumps(obj, indent=1)
    return (
        re.sub(
            r"\[\s*([^\[\]{}]*?)\s*\]", lambda m: "[" + re.sub(r"\s*\n\s*", " ", m[1]) + "]", text
        )
        + "\n"
    )


def _relative(raw: str, where: str) -> str:
    if not raw or raw != raw.strip():
        raise FormatError(f"{where}: empty path or path with surrounding spaces {raw!r}")
    if raw.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", raw) or ".." in Path(raw).parts:
        raise FormatError(f"{where}: image path {raw!r} must be relative and stay inside the root")
    return raw


def parse_list(path: Path) -> list[tuple[str, int, int]]:
    """Parse ``<relative path> <integer label>`` lines (right split on the last space).

    Blank lines are skipped; Windows line endings are accepted.

    Returns:
        ``(relative path, label, line number)`` per entry.

    Raises:
        FormatError: a line without a space-separated integer label or with an unsafe path,
            naming the file and line number.
    """
    out = []
    for no, raw in enumerate(read_text(path).splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path} line {no}"
        rel, sep, label = raw.rstrip("\r").rpartition(" ")
        if not sep or not re.fullmatch(r"-?\d+", label):
            raise FormatError(f"{where}: expected '<relative path> <integer label>', got {raw!r}")
        out.append((_relative(rel, where), int(label), no))
    return out


def _dedup(entries: list[tuple[str, int, int]], path: Path) -> tuple[list, int]:
    """Drop repeated ``(path, label)`` entries; the same path with two labels is an error."""
    seen: dict[str, tuple[int, int]] = {}
    out = []
    for rel, label, no in entries:
        if rel in seen:
            first_label, first_no = seen[rel]
            if first_label != label:
                raise FormatError(
                    f"{path} line {no}: {rel!r} has label {label}, but label {first_label} on "
                    f"line {first_no}"
                )
            continue
        seen[rel] = (label, no)
        out.append((rel, label, no))
    return out, len(entries) - len(out)


# ------------------------------------------------------------------------------------ NOAH --
def noah_split(root: str | Path, folder: str, split: str) -> SplitList:
    """One split of one NOAH VTAB-1k task folder (``<root>/<folder>/<split>.txt``).

    Raises:
        FormatError: missing folder or list file, a malformed line or a line naming an image
            already listed (file and line number).
    """
    task_dir = Path(root) / folder
    if not task_dir.is_dir():
        raise FormatError(
            f"no NOAH task folder {task_dir} (expected {task_dir}/{split}.txt and "
            f"{task_dir}/images/{split}/)"
        )
    list_file = task_dir / f"{split}.txt"
    entries = parse_list(list_file)
    first: dict[str, int] = {}
    for rel, _, no in entries:
        key = Path(rel).as_posix()
        if first.setdefault(key, no) != no:
            raise FormatError(
                f"{list_file} line {no}: image {rel!r} is already listed on line {first[key]}; "
                f"a NOAH list names every image once"
            )
    return SplitList(
        name=split,
        list_file=list_file,
        paths=[task_dir / rel for rel, _, _ in entries],
        labels=np.array([lab for _, lab, _ in entries], dtype=np.int64),
        lines=[no for _, _, no in entries],
        root=task_dir,
    )


# ------------------------------------------------------------------------------- VPT JSON --
#: FGVC dataset -> (accepted folder names, image-root candidates relative to that folder)
VPT_DATASETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cub": (("CUB_200_2011", "CUB", "cub", "cub200"), ("images",)),
    "nabirds": (("nabirds", "NABirds"), ("images",)),
    "oxford_flowers": (("OxfordFlowers", "OxfordFlower", "oxford_flowers", "flowers"), ("",)),
    "stanford_dogs": (("StanfordDogs", "Stanford-dogs", "stanford_dogs", "dogs"), ("Images", "")),
    "stanford_cars": (("StanfordCars", "Stanford-cars", "stanford_cars", "cars"), ("",)),
}

#: CoOp few-shot dataset -> (accepted folder names, image root relative to that folder)
COOP_DATASETS: dict[str, tuple[tuple[str, ...], str]] = {
    "fgvc_aircraft": (("fgvc_aircraft", "fgvc-aircraft"), "images"),
    "food101": (("food-101", "food101", "food_101"), "images"),
    "oxford_flowers102": (("oxford_flowers102", "oxford-flowers102"), "images"),
    "oxford_pets": (("oxford_pets", "oxford-pets"), "images"),
    "stanford_cars": (("stanford_cars", "standford-cars", "stanford-cars"), ""),
}


def find_folder(root: str | Path, names: Sequence[str], what: str) -> Path:
    """The first of ``root/<name>`` that exists.

    Raises:
        FormatError: none exists (the message lists every name tried).
    """
    for name in names:
        if (Path(root) / name).is_dir():
            return Path(root) / name
    raise FormatError(f"no {what} folder under {root}: tried {', '.join(names)}")


def _line_of(text: str, key: str, nth: int = 1) -> int:
    """Line of the ``nth`` occurrence of ``"key"`` in ``text`` (0 if not found)."""
    for quoted in (json.dumps(key, ensure_ascii=False), json.dumps(key)):
        pos = -1
        for _ in range(nth):
            pos = text.find(quoted, pos + 1)
            if pos < 0:
                break
        if pos >= 0:
            return text.count("\n", 0, pos) + 1
    return 0


def read_vpt_json(path: Path) -> list[tuple[str, int, int]]:
    """Parse one VPT split file: ``{"relative/path.jpg": class_id, ...}``.

    Returns:
        ``(relative path, original class id, line number)`` per entry, in file order.

    Raises:
        FormatError: invalid JSON, not an object, a duplicate key or a non-integer class id
            (file and line number).
    """
    text = read_text(path)

    def pairs(items: list[tuple[str, object]]) -> dict:
        seen: dict[str, object] = {}
        for k, v in items:
            if k in seen:
                no = _line_of(text, k, nth=2)
                raise FormatError(f"{path} line {no}: duplicate image key {k!r}")
            seen[k] = v
        return seen

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as err:
        raise FormatError(f"{path} line {err.lineno}: invalid JSON ({err.msg})") from err
    if not isinstance(data, dict):
        raise FormatError(f"{path} line 1: expected a JSON object mapping image path -> class id")
    out = []
    for rel, cid in data.items():
        no = _line_of(text, rel)
        if isinstance(cid, bool) or not isinstance(cid, int):
            raise FormatError(f"{path} line {no}: class id of {rel!r} is {cid!r}, not an integer")
        out.append((_relative(rel, f"{path} line {no}"), cid, no))
    return out


def vpt_splits(
    root: str | Path, dataset: str, splits: Sequence[str], num_classes: int
) -> dict[str, SplitList]:
    """Read ``train``/``val``/``test`` JSON files of one FGVC dataset with one label map.

    The map sorts the original class ids of all three files (not only ``splits``), so preparing
    one split gives the same labels as preparing all.

    Raises:
        FormatError: a malformed file, or a number of distinct class ids other than
            ``num_classes``.
    """
    names, roots = VPT_DATASETS[dataset]
    folder = find_folder(root, names, f"VPT-json {dataset!r}")
    parsed = {s: read_vpt_json(folder / f"{s}.json") for s in ("train", "val", "test")}
    ids = sorted({cid for entries in parsed.values() for _, cid, _ in entries})
    if len(ids) != num_classes:
        raise FormatError(
            f"{folder}: {len(ids)} distinct class ids in train/val/test.json, expected "
            f"{num_classes}"
        )
    cont = {cid: i for i, cid in enumerate(ids)}
    per_file = {s: {cid for _, cid, _ in e} for s, e in parsed.items()}
    first = parsed["train"][0][0] if parsed["train"] else ""
    image_root = next(
        (folder / r for r in roots if (folder / r / first).exists()), folder / roots[0]
    )
    out = {}
    for s in splits:
        notes = [f"image root {image_root}", f"class ids {ids[0]}..{ids[-1]} -> 0..{len(ids) - 1}"]
        if per_file[s] != set(ids):
            notes.append(f"{len(set(ids) - per_file[s])} classes absent from {s}.json")
        out[s] = SplitList(
            name=s,
            list_file=folder / f"{s}.json",
            paths=[image_root / rel for rel, _, _ in parsed[s]],
            labels=np.array([cont[cid] for _, cid, _ in parsed[s]], dtype=np.int64),
            lines=[no for _, _, no in parsed[s]],
            notes=notes,
            root=folder,
        )
    return out


# ----------------------------------------------------------------------------------- CoOp --
def coop_split(root: str | Path, dataset: str, split: str) -> SplitList:
    """One CoOp list of a few-shot dataset (``split`` is the list's file name).

    Raises:
        FormatError: missing folder or list, a malformed line, or one path with two labels.
    """
    names, image_dir = COOP_DATASETS[dataset]
    folder = find_folder(root, names, f"few-shot {dataset!r}")
    list_dir = folder / "annotations" if (folder / "annotations").is_dir() else folder
    list_file = list_dir / split
    entries, dropped = _dedup(parse_list(list_file), list_file)
    notes = [f"removed {dropped} repeated lines"] if dropped else []
    base = folder / image_dir if image_dir else folder
    return SplitList(
        name=split,
        list_file=list_file,
        paths=[base / rel for rel, _, _ in entries],
        labels=np.array([lab for _, lab, _ in entries], dtype=np.int64),
        lines=[no for _, _, no in entries],
        notes=notes,
        root=folder,
    )


# --------------------------------------------------------------------------------- images --
def check_inside(path: Path, root: Path) -> None:
    """Refuse an image whose real path (symlinks resolved) lies outside ``root``'s real path.

    Args:
        path: the listed image.
        root: the task or dataset folder (itself may be a symlink).

    Raises:
        ImageError: the image resolves outside ``root`` (names both).
    """
    real, base = os.path.realpath(path), os.path.realpath(root)
    if real != base and not real.startswith(base.rstrip(os.sep) + os.sep):
        raise ImageError(
            f"image {path} is a link to {real}, outside its folder {root}; images must stay "
            f"inside it (copy the file in instead of linking it)"
        )


def decode_image(path: Path, image_size: int) -> tuple[np.ndarray, bytes]:
    """Decode with PIL, convert to RGB, resize directly to ``image_size``² (bicubic).

    Returns:
        ``(uint8 (image_size, image_size, 3) array, 16-byte digest of the decoded pixels before
        resizing)``; equal digests mean identical images (used for the train/test overlap check).

    Raises:
        ImageError: the file is missing, not a regular file (a FIFO would block the read
            forever) or cannot be decoded (names the path).
    """
    from PIL import Image

    try:
        # non-blocking open: a FIFO (or device) is refused by its type instead of waited on
        fh = os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb")
    except FileNotFoundError as err:
        raise ImageError(f"missing image {path}") from err
    except OSError as err:
        raise ImageError(f"cannot read image {path}: {err.strerror}") from err
    with fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ImageError(
                f"image {path} is not a regular file (a FIFO, device or folder); list image "
                "files only"
            )
        try:
            with Image.open(fh) as im:
                rgb = im.convert("RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise ImageError(f"cannot decode image {path}: {err}") from err
    return _digest_and_resize(rgb, image_size)


def array_image(arr: np.ndarray, image_size: int, where: str) -> tuple[np.ndarray, bytes]:
    """Resize an already decoded uint8 ``(H, W, 3)`` array exactly as :func:`decode_image` does.

    Same digest formula and the same PIL bicubic direct resize, so two sources holding the same
    pixels give the same cached arrays.

    Raises:
        ImageError: not a uint8 ``(H, W, 3)`` array (names ``where``).
    """
    from PIL import Image

    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
        raise ImageError(
            f"{where}: image is {arr.dtype} {list(arr.shape)}, expected uint8 (H, W, 3)"
        )
    return _digest_and_resize(Image.fromarray(np.ascontiguousarray(arr), "RGB"), image_size)


def _digest_and_resize(rgb: Any, image_size: int) -> tuple[np.ndarray, bytes]:
    from PIL import Image

    h = hashlib.blake2b(rgb.tobytes(), digest_size=16)
    h.update(np.array(rgb.size, dtype=np.int64).tobytes())
    if rgb.size != (image_size, image_size):
        rgb = rgb.resize((image_size, image_size), Image.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8), h.digest()


__all__ = [
    "COOP_DATASETS",
    "ArraySplit",
    "VPT_DATASETS",
    "DatasetError",
    "FormatError",
    "ImageError",
    "SplitList",
    "array_image",
    "check_inside",
    "coop_split",
    "decode_image",
    "file_sha256",
    "find_folder",
    "noah_split",
    "parse_list",
    "read_vpt_json",
    "vpt_splits",
]
