"""Video suite (SSv2, HMDB51): split lists, decord decoding, clip sampling, prepare manifests.

Tasks (suite ``video``, modality ``"video"``, declared in :mod:`pebench.datasets.video_suite`;
runs build their splits with :func:`video_split`, :data:`LOADER` describes their data):

==========================  =======  ===============  ==========================================
task                        classes  data format      source lists
==========================  =======  ===============  ==========================================
``video/ssv2``              174      videomae-list    ``train.csv``, ``val.csv`` (VideoMAE lists)
``video/hmdb51``            51       hmdb51-splits    official split 1 (``*_test_split1.txt``)
``video/hmdb51_split2``     51       hmdb51-splits    official split 2 (not in the suite)
``video/hmdb51_split3``     51       hmdb51-splits    official split 3 (not in the suite)
==========================  =======  ===============  ==========================================

Folders. The raw data folder (``pebench prepare --data-dir``) is either the dataset folder
itself or a root holding it under one of the names in :data:`FOLDERS` (``<root>/ssv2``,
``<root>/hmdb51``...), so one ``--data-dir`` serves the whole suite. As for image suites,
``pebench run --data-dir`` is the **cache** folder (``pebench prepare --cache-dir``, default
:func:`pebench.datasets.cache.default_cache_dir`): :func:`prepare_video` writes each task's
manifest to ``<cache>/video/<task>/manifest.json`` (never into the raw folder, which may be
read-only), recording the raw dataset folder's absolute path, and runs find the videos through it.

* SSv2 (VideoMAE / AdaptFormer convention): ``<ssv2>/{train,val}.csv``, one line ``<video path>
  <label>`` (whitespace-separated, exactly two fields; paths relative to the dataset folder or
  absolute). ``test.csv`` (a copy of ``val.csv`` in that convention) is not read.
* HMDB51 (official release): ``<hmdb51>/testTrainMulti_7030_splits/<class>_test_split<k>.txt``
  with lines ``<file>.avi <id>`` (1 = train, 2 = test, 0 = unused), videos at
  ``<hmdb51>/<class>/<file>.avi`` (what unpacking ``hmdb51_org.rar`` and its per-class archives
  into one folder gives). Class ids are the positions of the class names in sorted order.

Roles. pebench selects hyperparameters on validation data only, and neither dataset has one, so
the official training list is split: ``val`` (split name ``val10``) takes, per class, round(10 %)
of its videos (at least 1, never all) chosen by a permutation seeded with ``(CARVE_SEED, class
id)`` over the class's paths in sorted order (independent of list order); ``train``
(``train90``) is the rest; ``trainval`` is the full official training list; ``test`` is the
official SSv2 validation list / the HMDB51 test list of the split.

Clip sampling (:class:`VideoProtocol`, after VideoMAE / AdaptFormer ``--num_frames 8
--sampling_rate 4``). A clip covers ``span = (num_frames - 1) * sampling_rate + 1`` frames.
Training: one clip at a uniformly random start in ``0 .. n - span``; a video shorter than
``span`` gives frames ``0, s, 2s, ...`` padded by repeating the last index. Every frame is resized
(bilinear, antialiased) so its short side is ``short_side``, a ``crop_size`` square is cropped at a
uniformly random position (no random-resized-crop, no scale jitter) and, if the protocol and the
dataset allow it, flipped horizontally with probability 1/2 (never for SSv2, whose labels name
directions). Test: ``test_segments`` clips with starts evenly spaced over ``0 .. n - span``
(rounded; one segment: the centre), each cropped at ``test_crops`` positions evenly spaced along
the long side (width if square; 3 crops: start, centre, end; 1 crop: centre) and centred on the
short side: V = segments × crops views, segment-major. Randomness comes from
``numpy.random.default_rng([seed, epoch, index])`` only, so clips do not depend on DataLoader
workers or order.

Bad videos. A missing, unopenable or undecodable video raises :class:`VideoError` naming its
path (and the list line). :func:`prepare_video` checks every video once (opens, frame count > 0,
first and last frame decode) and writes the manifest into the cache folder; with ``skip_bad``
(``pebench prepare --skip-bad``) bad videos are recorded there instead of failing.
:func:`video_split` reads the manifest (no decode checks per run) after checking it still matches
the task and the list files, and refuses to run without one; a budget that allows skipping
(``skip_bad=True``) drops the recorded bad videos and counts them in ``VideoClips.skipped``.

Why one module of this size: lists, the ``val`` carve-out, the index hash, the prepare manifest
and :func:`video_split` are one contract (a split's identity is its list entries, carve-out, bad
videos and file sizes, and both :func:`prepare_video` and :func:`video_split` must compute it the
same way); sampling and decoding are the rest of what a video split is. The task declarations
(:mod:`~pebench.datasets.video_suite`) and the clip protocol (:class:`pebench.budget.VideoProtocol`,
part of a budget) live elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pebench.budget import VideoProtocol
from pebench.datasets.catalog import resolve_specs
from pebench.datasets.formats import (
    DatasetError,
    FormatError,
    file_sha256,
    manifest_json,
    read_text,
)
from pebench.datasets.spec import Loader, TaskSpec
from pebench.datasets.video_suite import HMDB_SPLITS, SPECS, VERSION

SCHEMA = "pebench-video-1"
#: share of each class of the official training list carved out as ``val``
VAL_FRACTION = 0.1
#: fixed seed of the carve-out (never a run's seed: the split must not move between runs)
CARVE_SEED = 1729
HMDB_SPLIT_DIR = "testTrainMulti_7030_splits"
#: dataset -> accepted folder names under a data root
FOLDERS = {
    "ssv2": ("ssv2", "SSv2", "sthv2", "something-something-v2", "20bn-something-something-v2"),
    "hmdb51": ("hmdb51", "HMDB51", "hmdb", "HMDB"),
}
_MARKER = {"ssv2": "train.csv", "hmdb51": HMDB_SPLIT_DIR}
_NO_FLIP = {"ssv2"}  # labels such as "pushing something from left to right"


class VideoError(DatasetError):
    """A missing, unopenable or undecodable video (the message names its path)."""


class VideoManifestError(DatasetError):
    """A prepare manifest that no longer matches its task or list files."""


def _dataset(spec: TaskSpec) -> str:
    if spec.data_format == "videomae-list":
        return "ssv2"
    if spec.data_format == "hmdb51-splits":
        return "hmdb51"
    raise DatasetError(
        f"task {spec.name!r}: data format {spec.data_format!r} is not a video format"
    )


def dataset_dir(spec: TaskSpec, data_dir: str | Path | None) -> Path:
    """The folder holding ``spec``'s lists: ``data_dir`` itself or ``data_dir/<known name>``.

    Raises:
        DatasetError: no such folder (says what was looked for).
    """
    ds = _dataset(spec)
    if data_dir is None:
        raise DatasetError(f"task {spec.name!r}: video tasks need a data folder (--data-dir)")
    root = Path(data_dir)
    for folder in (root, *(root / n for n in FOLDERS[ds])):
        if (folder / _MARKER[ds]).exists():
            return folder
    raise DatasetError(
        f"task {spec.name!r}: no {_MARKER[ds]} in {root} or in its subfolders "
        f"{', '.join(FOLDERS[ds])}"
    )


# ------------------------------------------------------------------------------ lists --
@dataclass
class VideoList:
    """Videos of one split as listed by the source files.

    Attributes:
        name: split name (``"train"``, ``"val10"``...).
        rels: video path relative to the dataset folder (absolute if listed outside it); the
            identity used in hashes and manifests.
        paths: absolute paths.
        labels: int64 labels.
        where: ``"<list file> line <n>"`` of every entry.
        files: the list files read.
    """

    name: str
    rels: list[str]
    paths: list[Path]
    labels: np.ndarray
    where: list[str]
    files: list[Path]

    def subset(self, name: str, keep: np.ndarray) -> VideoList:
        """The entries where ``keep`` is true, as split ``name``."""
        idx = np.flatnonzero(keep)
        return VideoList(
            name,
            [self.rels[i] for i in idx],
            [self.paths[i] for i in idx],
            self.labels[idx],
            [self.where[i] for i in idx],
            self.files,
        )


def _entry(folder: Path, raw: str) -> tuple[str, Path]:
    path = Path(raw)
    if not path.is_absolute():
        return path.as_posix(), folder / path
    try:
        return path.relative_to(folder).as_posix(), path
    except ValueError:
        return str(path), path


def _build(name: str, folder: Path, rows: list[tuple[str, int, str]], files: list[Path]):
    seen: dict[str, str] = {}
    rels, paths = [], []
    for raw, _, where in rows:
        rel, path = _entry(folder, raw)
        if rel in seen:
            raise FormatError(f"{where}: video {rel!r} is already listed at {seen[rel]}")
        seen[rel] = where
        rels.append(rel)
        paths.append(path)
    labels = np.array([lab for _, lab, _ in rows], dtype=np.int64)
    return VideoList(name, rels, paths, labels, [w for _, _, w in rows], files)


def parse_video_list(path: Path, num_classes: int) -> list[tuple[str, int, str]]:
    """Parse a VideoMAE list: ``<video path> <label>`` per line (blank lines skipped).

    Returns:
        ``(path as written, label, "<file> line <n>")`` per entry.

    Raises:
        FormatError: a line without exactly two fields, a non-integer label or a label outside
            ``0 .. num_classes - 1``, naming the file and line.
    """
    out = []
    for no, raw in enumerate(read_text(path).splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path} line {no}"
        fields = raw.split()
        if len(fields) != 2 or not re.fullmatch(r"-?\d+", fields[1]):
            raise FormatError(
                f"{where}: expected '<video path> <integer label>' (two fields; rawframe lists "
                f"with a frame count are not supported), got {raw!r}"
            )
        label = int(fields[1])
        if not 0 <= label < num_classes:
            raise FormatError(f"{where}: label {label} outside 0..{num_classes - 1}")
        out.append((fields[0], label, where))
    return out


def _require_classes(vl: VideoList, num_classes: int, what: str) -> None:
    counts = np.bincount(vl.labels, minlength=num_classes)
    missing = np.flatnonzero(counts == 0).tolist()
    if missing:
        raise DatasetError(
            f"{what}: {len(missing)} of {num_classes} classes have no videos "
            f"(ids {missing[:10]}{' ...' if len(missing) > 10 else ''})"
        )


def ssv2_lists(folder: Path, num_classes: int) -> dict[str, VideoList]:
    """Official SSv2 lists: ``{"train": train.csv, "val": val.csv}``; every class present."""
    out = {}
    for name in ("train", "val"):
        f = folder / f"{name}.csv"
        out[name] = _build(name, folder, parse_video_list(f, num_classes), [f])
        _require_classes(out[name], num_classes, str(f))
    return out


def hmdb_lists(folder: Path, split: int, num_classes: int) -> dict[str, VideoList]:
    """Official HMDB51 split ``split``: ``{"train": id 1, "test": id 2}`` (id 0 unused).

    Raises:
        FormatError: no split files, a malformed line (file and line).
        DatasetError: a class count other than ``num_classes``, a class without train or test
            videos (names its split file).
    """
    sdir = folder / HMDB_SPLIT_DIR
    suffix = f"_test_split{split}.txt"
    files = sorted(sdir.glob(f"*{suffix}"))
    if not files:
        raise FormatError(f"no HMDB51 split files '<class>{suffix}' in {sdir}")
    if len(files) != num_classes:
        raise DatasetError(
            f"{sdir}: {len(files)} classes have '{suffix}' files, expected {num_classes}"
        )
    rows: dict[str, list] = {"1": [], "2": []}
    for label, f in enumerate(files):
        cls = f.name[: -len(suffix)]
        counts = {"0": 0, "1": 0, "2": 0}
        for no, raw in enumerate(read_text(f).splitlines(), start=1):
            if not raw.strip():
                continue
            fields = raw.split()
            if len(fields) != 2 or fields[1] not in counts:
                raise FormatError(
                    f"{f} line {no}: expected '<file>.avi <id>' with id 0, 1 or 2, got {raw!r}"
                )
            counts[fields[1]] += 1
            if fields[1] != "0":
                rows[fields[1]].append((f"{cls}/{fields[0]}", label, f"{f} line {no}"))
        for key, role in (("1", "train (id 1)"), ("2", "test (id 2)")):
            if not counts[key]:
                raise DatasetError(f"{f}: class {cls!r} has no {role} videos in split {split}")
    return {
        "train": _build("train", folder, rows["1"], files),
        "test": _build("test", folder, rows["2"], files),
    }


def official_lists(spec: TaskSpec, folder: Path) -> dict[str, VideoList]:
    """The task's official lists by split name (SSv2: train/val, HMDB51: train/test)."""
    if _dataset(spec) == "ssv2":
        return ssv2_lists(folder, spec.num_classes)
    return hmdb_lists(folder, HMDB_SPLITS.get(spec.name, 1), spec.num_classes)


def carve_val(
    rels: Sequence[str], labels: np.ndarray, fraction: float = VAL_FRACTION, seed: int = CARVE_SEED
) -> np.ndarray:
    """Boolean mask of the ``val`` carve-out of a training list (see the module docstring).

    Per class with ``n`` videos: ``k = round(fraction * n)`` clamped to ``1 .. n - 1`` (0 if
    ``n < 2``), the first ``k`` of a ``default_rng([seed, class])`` permutation of the class's
    entries sorted by path. Independent of the list's order.
    """
    labels = np.asarray(labels, dtype=np.int64)
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[np.argsort([rels[i] for i in idx], kind="stable")]
        n = len(idx)
        k = 0 if n < 2 else min(max(int(round(fraction * n)), 1), n - 1)
        perm = np.random.default_rng([seed, int(c)]).permutation(n)
        mask[idx[perm[:k]]] = True
    return mask


def split_lists(spec: TaskSpec, folder: Path) -> dict[str, VideoList]:
    """Every split name the task's roles use, built from the official lists."""
    off = official_lists(spec, folder)
    train = off["train"]
    is_val = carve_val(train.rels, train.labels)
    out = {
        "train": train,
        "train90": train.subset("train90", ~is_val),
        "val10": train.subset("val10", is_val),
    }
    test = spec.splits["test"]
    out[test] = off[test]
    return out


# ----------------------------------------------------------------------------- decode --
def _reader(path: Path) -> Any:
    import decord

    if not path.is_file():
        raise VideoError(f"missing video {path}")
    try:
        return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as err:  # decord raises its own DECORDError / RuntimeError
        raise VideoError(f"cannot open video {path}: {err}") from err


def _frames(vr: Any, path: Path, indices: np.ndarray) -> np.ndarray:
    try:
        return vr.get_batch([int(i) for i in indices]).asnumpy()
    except Exception as err:
        raise VideoError(f"cannot decode frames {indices.tolist()} of video {path}: {err}") from err


def check_video(path: Path) -> int:
    """Open a video, require frames, decode its first and last frame; returns the frame count.

    Raises:
        VideoError: missing, unopenable, empty or undecodable (names the path).
    """
    vr = _reader(path)
    n = len(vr)
    if n < 1:
        raise VideoError(f"video {path} has no frames")
    out = _frames(vr, path, np.array([0, n - 1]))
    if out.ndim != 4 or out.shape[-1] != 3 or out.shape[1] < 1 or out.shape[2] < 1:
        raise VideoError(f"video {path} decodes to frames of shape {out.shape}, not (H, W, 3)")
    return n


def _check_all(
    vl: VideoList, skip_bad: bool, workers: int, progress: bool = False
) -> tuple[dict[str, int], list[dict]]:
    """Frame counts of good videos and ``{path, where, reason}`` of bad ones (if skipping)."""

    def work(i: int) -> tuple[int, int | None, str]:
        try:
            return i, check_video(vl.paths[i]), ""
        except VideoError as err:
            if not skip_bad:
                raise VideoError(f"{err} (listed in {vl.where[i]})") from err
            return i, None, str(err)

    from tqdm.auto import tqdm

    frames, bad = {}, []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(work, range(len(vl.rels)))
        for i, n, reason in tqdm(results, total=len(vl.rels), disable=not progress, leave=False):
            if n is None:
                bad.append({"path": vl.rels[i], "where": vl.where[i], "reason": reason})
            else:
                frames[vl.rels[i]] = n
    return frames, bad


def index_sha256(rels: Sequence[str], labels: np.ndarray, sizes: Sequence[int]) -> str:
    """SHA-256 of a split's index: relative path, label and file size of every video, in order."""
    h = hashlib.sha256()
    for rel, label, size in zip(rels, np.asarray(labels).tolist(), sizes, strict=True):
        h.update(f"{rel}\t{label}\t{size}\n".encode())
    return h.hexdigest()


def _sizes(vl: VideoList) -> list[int]:
    out = []
    for path, where in zip(vl.paths, vl.where, strict=True):
        try:
            out.append(path.stat().st_size)
        except OSError as err:
            raise VideoError(f"missing video {path} (listed in {where}): {err}") from err
    return out


# --------------------------------------------------------------------------- sampling --
def _clip(start: int, n: int, p: VideoProtocol) -> np.ndarray:
    if n >= p.span:
        return start + p.sampling_rate * np.arange(p.num_frames)
    idx = np.arange(0, n, p.sampling_rate)[: p.num_frames]
    return np.concatenate([idx, np.full(p.num_frames - len(idx), idx[-1])])


def train_indices(n: int, p: VideoProtocol, rng: np.random.Generator) -> np.ndarray:
    """Frame indices ``(T,)`` of a training clip from a video of ``n`` frames."""
    start = int(rng.integers(0, n - p.span + 1)) if n >= p.span else 0
    return _clip(start, n, p)


def test_indices(n: int, p: VideoProtocol) -> np.ndarray:
    """Frame indices ``(test_segments, T)`` of the test clips of a video of ``n`` frames."""
    room = max(n - p.span, 0)
    if p.test_segments == 1:
        starts = [room // 2]
    else:
        starts = np.round(np.linspace(0, room, p.test_segments)).astype(int).tolist()
    return np.stack([_clip(s, n, p) for s in starts])


def crop_offsets(length: int, crop: int, count: int) -> list[int]:
    """Offsets of ``count`` crops of ``crop`` evenly spaced over ``length`` (1: the centre)."""
    if count == 1:
        return [(length - crop) // 2]
    return np.round(np.linspace(0, length - crop, count)).astype(int).tolist()


# ---------------------------------------------------------------------------- dataset --
class VideoClips:
    """Map-style dataset of clips (a torch ``DataLoader`` takes it as is).

    ``x, label = ds[i]``: ``x`` float32, normalised, ``(C, T, H, W)`` when ``views == 1``
    (training, or a single-view protocol), else ``(V, C, T, H, W)``; ``label`` an int.

    Attributes:
        labels: int64 labels.
        views: views per item (1 in training).
        sha256: :func:`index_sha256` of the split (paths, labels, file sizes).
        skipped: bad videos dropped from the split.
        epoch: set by :meth:`set_epoch`; training clips depend on ``(seed, epoch, index)``.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: np.ndarray,
        protocol: VideoProtocol,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int,
        train: bool,
        *,
        flip: bool = False,
        sha256: str = "",
        skipped: int = 0,
    ) -> None:
        """Wrap videos and labels; ``flip`` is the effective training flip (task and protocol)."""
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} videos but {len(labels)} labels")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values, got {mean} and {std}")
        self.paths = [Path(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.protocol = protocol
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.seed = int(seed)
        self.train = bool(train)
        self.flip = bool(flip) and self.train
        self.views = 1 if self.train else protocol.views
        self.sha256 = sha256
        self.skipped = int(skipped)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random clips ``__getitem__`` returns."""
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        import torch
        import torch.nn.functional as F

        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} videos")
        p, path = self.protocol, self.paths[i]
        vr = _reader(path)
        n = len(vr)
        if n < 1:
            raise VideoError(f"video {path} has no frames")
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        idx = train_indices(n, p, rng)[None] if self.train else test_indices(n, p)
        uniq, inv = np.unique(idx, return_inverse=True)
        raw = torch.from_numpy(_frames(vr, path, uniq)).permute(0, 3, 1, 2).float()
        h, w = raw.shape[-2:]
        scale = p.short_side / min(h, w)
        size = (max(p.short_side, round(h * scale)), max(p.short_side, round(w * scale)))
        if (h, w) != size:
            raw = F.interpolate(raw, size=size, mode="bilinear", antialias=True)
        clips = raw[torch.from_numpy(inv.reshape(idx.shape))]  # (S, T, C, H, W)
        c = p.crop_size
        if self.train:
            top = int(rng.integers(0, size[0] - c + 1))
            left = int(rng.integers(0, size[1] - c + 1))
            x = clips[:, :, :, top : top + c, left : left + c]
            if self.flip and rng.random() < 0.5:
                x = x.flip(-1)
        else:
            wide = size[1] >= size[0]
            along = crop_offsets(size[1] if wide else size[0], c, p.test_crops)
            across = (size[0] if wide else size[1]) - c
            pos = [(across // 2, a) if wide else (a, across // 2) for a in along]
            x = torch.stack(
                [clips[s, :, :, t : t + c, o : o + c] for s in range(len(clips)) for t, o in pos]
            )
        mean = torch.from_numpy(self.mean * 255).view(1, 1, 3, 1, 1)
        std = torch.from_numpy(self.std * 255).view(1, 1, 3, 1, 1)
        x = ((x - mean) / std).permute(0, 2, 1, 3, 4).contiguous()
        return (x[0] if self.views == 1 else x), int(self.labels[i])


# --------------------------------------------------------------------------- manifest --
def manifest_path(spec: TaskSpec, cache_dir: str | Path) -> Path:
    """Where :func:`prepare_video` writes ``spec``'s manifest: ``<cache>/<task>/manifest.json``."""
    return Path(cache_dir) / spec.name / "manifest.json"


def _identity(spec: TaskSpec) -> dict[str, Any]:
    return {
        "task": spec.name,
        "version": spec.version,
        "data_format": spec.data_format,
        "num_classes": spec.num_classes,
        "splits": dict(sorted(spec.splits.items())),
        "carve": {"fraction": VAL_FRACTION, "seed": CARVE_SEED},
    }


def _lists_sha(lists: dict[str, VideoList], folder: Path) -> dict[str, str]:
    out = {}
    for name, vl in lists.items():
        h = hashlib.sha256()
        for f in vl.files:
            h.update(f"{_entry(folder, str(f))[0]}\t{file_sha256(f)}\n".encode())
        out[name] = h.hexdigest()
    return out


def data_hash(spec: TaskSpec, split_sha: dict[str, str]) -> str:
    """16 hex digits identifying a task's data: its identity and every split's index hash."""
    payload = {**_identity(spec), "index": dict(sorted(split_sha.items()))}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class VideoReport:
    """What :func:`prepare_video` did for one task.

    Attributes:
        task: task id.
        manifest: path of the written manifest.
        splits: split name -> videos kept.
        skipped: ``{path, where, reason}`` of every dropped video.
        checked: videos opened and decoded.
        data_hash: :func:`data_hash` of the task (recorded in result rows).
        seconds: wall time.
    """

    task: str
    manifest: Path
    splits: dict[str, int]
    skipped: list[dict]
    checked: int
    data_hash: str
    seconds: float


def _frame_stats(frames: list[int]) -> dict[str, float | int | None]:
    if not frames:
        return {"min": None, "max": None, "mean": None}
    return {"min": min(frames), "max": max(frames), "mean": round(sum(frames) / len(frames), 2)}


def prepare_video(
    spec_or_suite: str | TaskSpec | Iterable[TaskSpec | str],
    data_dir: str | Path,
    cache_dir: str | Path | None = None,
    skip_bad: bool = False,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> list[VideoReport]:
    """Index a video task's lists, decode-check every video, write its manifest atomically.

    The manifest (``<cache_dir>/<task id>/manifest.json``, see :func:`manifest_path`) records the
    task identity, the raw dataset folder (absolute), the list files' hashes, per split the
    count, class counts, frame-count summary and index hash, every video's frame count, the
    skipped videos with reasons, and the data hash. Nothing is written into ``data_dir``.

    Args:
        spec_or_suite: a selector (``"video"``, ``"video/hmdb51"``) or task specs.
        data_dir: the raw dataset folder or a root holding it (see :func:`dataset_dir`).
        cache_dir: the cache folder the manifests go to, the one ``pebench run --data-dir``
            is given (default :func:`pebench.datasets.cache.default_cache_dir`).
        skip_bad: record bad videos and drop them instead of failing.
        workers: decoding threads (default ``min(8, cpu count)``).
        progress: show a progress bar.

    Returns:
        One :class:`VideoReport` per task.

    Raises:
        VideoError: a bad video without ``skip_bad`` (path and list line).
        pebench.datasets.formats.DatasetError: malformed lists, labels out of range, classes
            without videos, an unknown data folder.
    """
    workers = workers or min(8, os.cpu_count() or 1)
    return [
        _prepare_task(spec, data_dir, _cache(cache_dir), skip_bad, workers, progress)
        for spec in resolve_specs(spec_or_suite)
    ]


def _cache(cache_dir: str | Path | None) -> Path:
    """The cache folder: ``cache_dir``, or the default one of image caches."""
    from pebench.datasets.cache import default_cache_dir

    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def _prepare_task(
    spec: TaskSpec,
    data_dir: str | Path,
    cache_dir: Path,
    skip_bad: bool,
    workers: int,
    progress: bool,
) -> VideoReport:
    """:func:`prepare_video` for one task."""
    import decord

    import pebench
    from pebench.fsio import atomic_write_text

    t0 = time.perf_counter()
    folder = dataset_dir(spec, data_dir)
    lists = split_lists(spec, folder)
    official = {k: lists[k] for k in ("train", spec.splits["test"])}
    frames, skipped = {}, []
    for vl in official.values():
        f, bad = _check_all(vl, skip_bad, workers, progress)
        frames.update(f)
        skipped += bad
    index = _index(spec, lists, frames, {b["path"] for b in skipped})
    dhash = data_hash(spec, {k: v["sha256"] for k, v in index.items()})
    manifest = {
        "schema": SCHEMA,
        **_identity(spec),
        "source_dir": str(folder.resolve()),
        "lists": _lists_sha(official, folder),
        "skip_bad": bool(skip_bad),
        "skipped": skipped,
        "index": index,
        "data_hash": dhash,
        "frames": dict(sorted(frames.items())),
        "decord_version": decord.__version__,
        "pebench_version": pebench.__version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    target = manifest_path(spec, cache_dir)
    try:
        atomic_write_text(target, manifest_json(manifest))
    except OSError as err:
        raise DatasetError(
            f"task {spec.name!r}: cannot write its manifest {target} ({err.strerror}); choose "
            f"another --cache-dir"
        ) from err
    sizes = {k: v["size"] for k, v in index.items()}
    checked = len(frames) + len(skipped)
    return VideoReport(spec.name, target, sizes, skipped, checked, dhash, time.perf_counter() - t0)


def _index(
    spec: TaskSpec, lists: dict[str, VideoList], frames: dict[str, int], bad_rels: set[str]
) -> dict[str, dict[str, Any]]:
    """The manifest's per-split index: sizes, class counts, frame stats, index hash."""
    index = {}
    for name in sorted(set(spec.splits.values())):
        vl = lists[name].subset(name, np.array([r not in bad_rels for r in lists[name].rels]))
        index[name] = {
            "size": len(vl.rels),
            "skipped": len(lists[name].rels) - len(vl.rels),
            "class_counts": np.bincount(vl.labels, minlength=spec.num_classes).tolist(),
            "frames": _frame_stats([frames[r] for r in vl.rels]),
            "sha256": index_sha256(vl.rels, vl.labels, _sizes(vl)),
        }
    return index


def _prepare_hint(spec: TaskSpec, cache_dir: str | Path, raw: str = "<raw video folder>") -> str:
    """The ``pebench prepare`` command writing ``spec``'s manifest into ``cache_dir``."""
    return f"pebench prepare {spec.name} --data-dir {raw} --cache-dir {cache_dir}"


def read_video_manifest(spec: TaskSpec, cache_dir: str | Path | None) -> dict:
    """The task's manifest in the cache folder, after checking it matches the task.

    Raises:
        CacheMissingError: no manifest (says what to run; notes when ``cache_dir`` holds the
            raw videos instead of a cache).
        VideoManifestError: unreadable, or written for another task definition (says to run
            prepare again).
    """
    from pebench.datasets.cache import CacheMissingError

    cache = _cache(cache_dir)
    path = manifest_path(spec, cache)
    if not path.is_file():
        try:
            raw = dataset_dir(spec, cache)
        except DatasetError:
            raw = None
        if raw is not None:
            raise CacheMissingError(
                f"task {spec.name!r}: {cache} holds the raw videos, but --data-dir of pebench "
                f"run is the prepared cache folder; run "
                f"{_prepare_hint(spec, '<cache folder>', str(raw))} and pass that cache folder"
            )
        raise CacheMissingError(
            f"task {spec.name!r}: no prepared video manifest at {path}. Run: "
            f"{_prepare_hint(spec, cache)}"
        )
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise VideoManifestError(
            f"unreadable manifest {path} ({err}); run prepare again: {_prepare_hint(spec, cache)}"
        ) from err
    if not isinstance(m, dict) or m.get("schema") != SCHEMA:
        raise VideoManifestError(f"{path}: not a {SCHEMA} manifest; run prepare again")
    for key, want in _identity(spec).items():
        if m.get(key) != want:
            raise VideoManifestError(
                f"{path}: {key} is {m.get(key)!r}, task {spec.name!r} has {want!r}; "
                f"run prepare again"
            )
    for key, kind in (("source_dir", str), ("lists", dict), ("skipped", list), ("index", dict)):
        if not isinstance(m.get(key), kind):
            raise VideoManifestError(
                f"{path}: {key} is {m.get(key)!r}, expected {kind.__name__}; run prepare again: "
                f"{_prepare_hint(spec, cache)}"
            )
    return m


def _open(spec: TaskSpec, cache_dir: str | Path | None) -> tuple[dict, Path, dict[str, VideoList]]:
    """Manifest, raw dataset folder and split lists of a prepared video task.

    Raises:
        VideoManifestError: the raw folder recorded by prepare is gone, or its list files changed
            since (says to run prepare again).
    """
    m = read_video_manifest(spec, cache_dir)
    path = manifest_path(spec, _cache(cache_dir))
    raw = Path(m["source_dir"])
    try:
        folder = dataset_dir(spec, raw)
    except DatasetError as err:
        raise VideoManifestError(
            f"{path}: the raw videos it records are not found ({err}); run prepare again with "
            f"their --data-dir"
        ) from err
    lists = split_lists(spec, folder)
    official = {k: lists[k] for k in ("train", spec.splits["test"])}
    if m["lists"] != _lists_sha(official, folder):
        raise VideoManifestError(
            f"{path}: the list files changed since it was written "
            f"({', '.join(str(f) for vl in official.values() for f in vl.files[:1])}...); "
            f"run prepare again"
        )
    return m, folder, lists


# ------------------------------------------------------------------------------ entry --
def video_split(
    spec: TaskSpec,
    role: str,
    data_dir: str | Path | None,
    protocol: VideoProtocol,
    mean: Sequence[float],
    std: Sequence[float],
    seed: int,
    train: bool,
    skip_bad: bool = False,
) -> VideoClips:
    """The split playing ``role`` (train/val/trainval/test) of a prepared video task, as a dataset.

    Reads the manifest :func:`prepare_video` wrote into the cache folder: no video is opened
    here, its bad-video record and index hash are used after checking the list files.

    Args:
        spec: a video task.
        role: ``"train"``, ``"val"``, ``"trainval"`` or ``"test"``.
        data_dir: the **cache** folder (``pebench prepare --cache-dir``; ``None``: the default
            cache folder), as for image suites.
        protocol: clip sampling and test views.
        mean: per-channel mean (0-1 scale, as timm's pretrained configs give it).
        std: per-channel std (0-1 scale).
        seed: base of the clip randomness.
        train: random training clips (one view) instead of test views.
        skip_bad: drop the bad videos prepare recorded (counted in ``skipped``) instead of
            failing.

    Raises:
        VideoError: a bad video in the manifest without ``skip_bad``.
        pebench.datasets.cache.CacheMissingError: the task was never prepared into ``data_dir``.
        VideoManifestError: a manifest that no longer matches the task or lists.
        pebench.datasets.formats.DatasetError: unknown role, malformed lists.
    """
    if role not in spec.splits:
        raise DatasetError(
            f"task {spec.name!r}: unknown role {role!r}; use {', '.join(spec.splits)}"
        )
    m, _, lists = _open(spec, data_dir)
    vl = lists[spec.splits[role]]
    keep, sha = _kept(spec, vl, m, skip_bad)
    return VideoClips(
        keep.paths,
        keep.labels,
        protocol,
        mean,
        std,
        seed,
        train,
        flip=protocol.flip and _dataset(spec) not in _NO_FLIP,
        sha256=sha,
        skipped=len(vl.rels) - len(keep.rels),
    )


def _kept(spec: TaskSpec, vl: VideoList, manifest: dict, skip_bad: bool) -> tuple[VideoList, str]:
    """The videos of split ``vl`` a run uses, and their index hash (see :func:`video_split`)."""
    name = vl.name
    bad = {b["path"]: b for b in manifest["skipped"]}
    here = [bad[r] for r in vl.rels if r in bad]
    if here and not skip_bad:
        raise VideoError(
            f"task {spec.name!r}, split {name!r}: {len(here)} bad videos recorded by "
            f"prepare, e.g. {here[0]['reason']}; the budget does not allow skipping"
        )
    keep = vl.subset(name, np.array([r not in bad for r in vl.rels], dtype=bool))
    return keep, manifest["index"][name]["sha256"]


def describe(spec: TaskSpec, data_dir: str | Path | None, image_size: int) -> tuple[str, str]:
    """``(data_format, data hash)`` for result rows (see ``pebench.datasets.describe_data``).

    Read from the manifest in the cache folder ``data_dir`` (``None``: the default one), after
    checking the list files it was written from.

    Raises:
        pebench.datasets.cache.CacheMissingError: the task was never prepared into ``data_dir``.
        VideoManifestError: a manifest that no longer matches the task or lists.
    """
    m, _, _ = _open(spec, data_dir)
    return spec.data_format, m["data_hash"]


#: the video family's loader: ``describe`` only (splits are torch datasets built by
#: :func:`video_split`, not arrays); ``TaskSpec.loader`` is ``"pebench.datasets.video:LOADER"``
LOADER = Loader(describe=describe)


__all__ = [
    "CARVE_SEED",
    "LOADER",
    "SPECS",
    "VERSION",
    "VAL_FRACTION",
    "VideoClips",
    "VideoError",
    "VideoList",
    "VideoManifestError",
    "VideoProtocol",
    "VideoReport",
    "carve_val",
    "check_video",
    "crop_offsets",
    "data_hash",
    "dataset_dir",
    "describe",
    "hmdb_lists",
    "index_sha256",
    "manifest_path",
    "parse_video_list",
    "prepare_video",
    "read_video_manifest",
    "split_lists",
    "ssv2_lists",
    "test_indices",
    "train_indices",
    "video_split",
]
