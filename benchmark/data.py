"""Turn a task split into batches of normalised tensors (the core owns data for every method).

Splits are never copied whole into float memory: :class:`ImageArray` keeps the loader's uint8
array (a memory map for prepared caches) and converts one batch at a time **on the run's
device**: the uint8 batch is gathered (from the device-resident copy of the split when one was
made, see :meth:`ImageArray.place`; else from the host array, pinned and copied on a side stream
on CUDA, one batch ahead of the compute), and the conversion to float, the resize and the
normalisation run where the model runs. On the CPU the very same code runs with the device being
the CPU, so a batch is bit-identical to the one the host-side converter gave. Datasets that
decode per example (video clips) go through a torch ``DataLoader`` with worker processes; both
paths yield identical batches for a given order, whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pebench.budget import Budget
from pebench.datasets import TaskSpec, array_sha256
from pebench.device import same
from pebench.errors import PebenchError


class DataError(PebenchError, ValueError):
    """Data that do not match their task spec; the message names task, split and what differs."""


class ImageArray(Dataset):
    """uint8 ``(N, H, W, 3)`` images served as normalised float ``(3, S, S)`` tensors.

    Args:
        images: the loader's array (may be a read-only memory map; never copied whole).
        labels: int labels ``(N,)``.
        image_size: output side; other sizes are resized (bicubic, clamped to [0, 1]).
        mean: per-channel mean of the backbone's normalisation.
        std: per-channel std of the backbone's normalisation.
    """

    views = 1

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.image_size = image_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self._resident: tuple[torch.Tensor, torch.Tensor] | None = None
        #: mean and std per device, copied there once (a copy per batch would wait for the GPU)
        self._norm: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.batch(torch.tensor([i]))
        return x[0], int(y[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the uint8 images (what a device-resident copy costs)."""
        return int(self.images.nbytes)

    def place(self, device: torch.device, max_bytes: float) -> bool:
        """Copy the uint8 split to ``device`` once if it is a GPU and fits in ``max_bytes``.

        Batches are then gathered on the device (no host work, no transfer per step). On the CPU
        the host array (a memory map for caches) already is the resident copy: nothing is done.

        Returns:
            Whether the split is now resident on ``device``.
        """
        if device.type == "cpu" or self.nbytes > max_bytes:
            return False
        images = torch.from_numpy(np.ascontiguousarray(self.images)).to(device)
        self._resident = images, torch.from_numpy(self.labels).to(device)
        return True

    def resident_on(self, device: torch.device) -> bool:
        """Whether :meth:`place` copied the split to ``device`` (``cuda`` is the current GPU)."""
        return self._resident is not None and same(self._resident[0].device, device)

    def gather(
        self, idx: torch.Tensor, device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``(B, H, W, 3)`` images and int64 labels at ``idx``, on ``device``."""
        device = device or torch.device("cpu")
        if self.resident_on(device):
            i = idx.pin_memory().to(device, non_blocking=True)
            return self._resident[0][i], self._resident[1][i]
        ii = idx.numpy()
        x = torch.from_numpy(np.ascontiguousarray(self.images[ii]))
        y = torch.from_numpy(self.labels[ii])
        if device.type == "cuda":  # pinned, so the copy does not block the host
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def convert(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` → normalised float ``(B, 3, S, S)`` on ``x``'s device."""
        x = x.permute(0, 3, 1, 2).float().div_(255)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = torch.nn.functional.interpolate(
                x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False
            ).clamp_(0, 1)
        if x.device not in self._norm:
            self._norm[x.device] = self.mean.to(x.device), self.std.to(x.device)
        mean, std = self._norm[x.device]
        return x.sub_(mean).div_(std)

    def batch(
        self, idx: torch.Tensor, device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels at ``idx`` (any order), converted and normalised on ``device``."""
        x, y = self.gather(idx, device)
        return self.convert(x), y

    def set_epoch(self, epoch: int) -> None:
        """Nothing is random per epoch for still images (kept for a uniform interface)."""


@dataclass
class Split:
    """One loaded split.

    Attributes:
        data: the examples: an :class:`ImageArray`, or any torch ``Dataset`` whose items are
            ``(tensor, label)`` and which has ``labels``, ``views`` and ``set_epoch``
            (e.g. video clips; ``views > 1`` means each test item stacks its views).
        labels: int64 tensor ``(N,)``.
        sha256: hash of the split's raw data (first 16 hex digits).
    """

    data: Any
    labels: torch.Tensor
    sha256: str

    @property
    def views(self) -> int:
        """Views per example at evaluation (logits are averaged over them)."""
        return int(getattr(self.data, "views", 1))

    def __len__(self) -> int:
        return len(self.labels)


def batches(
    split: Split,
    order: torch.Tensor,
    batch_size: int,
    workers: int = 0,
    device: torch.device | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches of ``split`` in ``order``, ``batch_size`` each, on ``device``."""
    device = device or torch.device("cpu")
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if hasattr(split.data, "gather"):  # an ImageArray: gathered and converted on the device
        yield from _one_ahead(split.data, chunks, device)
        return
    loader = DataLoader(
        split.data,
        batch_sampler=[c.tolist() for c in chunks],
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    for x, y in loader:
        y = torch.as_tensor(y, dtype=torch.int64)
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _one_ahead(
    data: ImageArray, chunks: list[torch.Tensor], device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``data`` at ``chunks``, each next uint8 batch gathered before this one is used.

    For a split that streams to a GPU (not device-resident), batch k+1 is gathered on the host,
    pinned, and copied on a side stream while batch k computes; the compute stream waits for
    the copy (an event) before converting it. Elsewhere the same sequence runs without streams.
    The batches are the same either way.
    """
    side = None
    if device.type == "cuda" and not data.resident_on(device):
        side = torch.cuda.Stream(device)

    def fetch(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        if side is None:
            return (*data.gather(idx, device), None)
        with torch.cuda.stream(side):
            x, y = data.gather(idx, device)
            return x, y, side.record_event()

    ahead = fetch(chunks[0]) if chunks else None
    for k in range(len(chunks)):
        x, y, copied = ahead
        if k + 1 < len(chunks):
            ahead = fetch(chunks[k + 1])
        if copied is not None:
            compute = torch.cuda.current_stream(device)
            compute.wait_event(copied)
            x.record_stream(compute)  # made on the side stream, freed after its use here
            y.record_stream(compute)
        yield data.convert(x), y


def place(splits: list[Split], device: torch.device, share: float) -> list[bool]:
    """Make each split device-resident while all of them fit in ``share`` of free device memory.

    Only GPUs (CUDA) are concerned; the budget is ``share`` × the memory free now, so the model
    and its activations keep the rest (``share`` is divided between runs sharing a device).

    Returns:
        Per split, whether it is resident.
    """
    if device.type != "cuda":
        return [False] * len(splits)
    free, _ = torch.cuda.mem_get_info(device)
    room, placed = share * free, []
    for s in splits:
        fits = hasattr(s.data, "place") and s.data.place(device, room)
        room -= s.data.nbytes if fits else 0
        placed.append(fits)
    return placed


def load_split(
    spec: TaskSpec,
    role: str,
    data_dir: str | Path | None,
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    subset: int | None = None,
) -> Split:
    """Load the split that plays ``role`` (train/val/trainval/test) for ``spec`` and check it.

    Raises:
        DataError: wrong size, labels outside ``0 .. num_classes - 1``, or bad array shapes.
    """
    split = spec.splits[role]
    images, labels = spec.load_fn()(spec, split, data_dir, image_size)
    images, labels = np.asarray(images), np.asarray(labels)  # memory maps stay memory maps
    where = f"task {spec.name!r}, split {split!r}"
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{where}: expected uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}"
        )
    if len(images) != len(labels):
        raise DataError(f"{where}: {len(images)} images but {len(labels)} labels")
    loader = spec.get_loader
    # a loader that verified the split against its manifest (prepared caches) checked the size
    # the manifest records: the task's, or the listed one of a cache prepared with
    # --nonstandard-sizes (recorded in its data format)
    if (
        split in spec.sizes
        and len(labels) != spec.sizes[split]
        and loader().known_sha256(spec, split, data_dir, image_size) is None
    ):
        raise DataError(f"{where}: {len(labels)} examples, expected {spec.sizes[split]}")
    if len(labels) and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise DataError(
            f"{where}: labels span {labels.min()}..{labels.max()}, "
            f"expected 0..{spec.num_classes - 1}"
        )
    # a loader that has just verified the split's hash (prepared caches) saves a second full read
    known = loader().known_sha256(spec, split, data_dir, image_size)
    full = known or array_sha256(images, labels)
    sha256 = full[:16]
    if subset is not None:
        images, labels = images[:subset], labels[:subset]
    data = ImageArray(images, labels, image_size, mean, std)
    return Split(data, torch.from_numpy(data.labels), sha256)


def run_split(
    spec: TaskSpec,
    phase: str,
    budget: Budget,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    data_dir: str | Path | None,
    seed: int,
    train: bool,
) -> tuple[Split, int]:
    """One split of a run (``train``: the one it trains on, else the one it is scored on).

    ``search`` runs train on ``train`` and score ``val``; ``final`` runs train on ``trainval``
    and score ``test`` (the only place test data is read). Video runs draw training clips at
    random (seeded by ``seed``, epoch and index); the test split gets the budget's multi-view
    protocol, the validation split its single centre view (selection only needs a ranking, and
    the views multiply its cost). Returns the split and how many bad videos it skipped.

    Raises:
        BudgetError: a budget of the other modality.
        DataError: data that fail their checks.
    """
    budget.check_task(spec)
    role = {("search", True): "train", ("search", False): "val"}.get((phase, train))
    role = role or ("trainval" if train else "test")
    if budget.video is None:
        load = dict(data_dir=data_dir, image_size=budget.image_size, mean=mean, std=std)
        return load_split(spec, role, subset=budget.subset, **load), 0
    from pebench.datasets.video import video_split

    views = budget.video
    if role == "val":
        views = replace(views, test_segments=1, test_crops=1)
    common = dict(mean=mean, std=std, seed=seed, skip_bad=budget.skip_bad)
    clips = video_split(spec, role, data_dir, views, train=train, **common)
    return Split(clips, torch.from_numpy(clips.labels), clips.sha256[:16]), int(clips.skipped)


def run_splits(
    spec: TaskSpec,
    phase: str,
    budget: Budget,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    data_dir: str | Path | None,
    seed: int,
) -> tuple[Split, Split, int]:
    """The training and evaluation splits of one run (:func:`run_split`), and the bad videos."""
    args = (spec, phase, budget, mean, std, data_dir, seed)
    tr, skipped_tr = run_split(*args, train=True)
    ev, skipped_ev = run_split(*args, train=False)
    return tr, ev, skipped_tr + skipped_ev


def blind(split: Split) -> Split:
    """``split`` without its labels (all 0): what a process that must not see them receives.

    The examples are the same objects (a memory map stays one); only the labels are replaced,
    in the split and in its dataset, so nothing reachable from the result holds them.
    """
    import copy

    data = copy.copy(split.data)
    zeros = np.zeros(len(split), dtype=np.int64)
    data.labels = zeros
    return Split(data, torch.from_numpy(zeros), split.sha256)
