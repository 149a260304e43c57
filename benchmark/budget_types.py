"""The budget's types: a versioned training protocol, its video clip protocol, its error.

:class:`Budget`, :class:`VideoProtocol` and :class:`BudgetError`, shared by the built-in budgets
(:mod:`pebench.budget`) and the budget-file reader (:mod:`pebench.budget_file`); import them from
:mod:`pebench.budget`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import product
from typing import Any, Literal

from pebench.errors import PebenchError


@dataclass(frozen=True)
class VideoProtocol:
    """Clip sampling and test views of video budgets (defaults: AdaptFormer's SSv2/HMDB51).

    Part of the budget (it fixes what a video run sees); :mod:`pebench.datasets.video` samples
    clips by it.

    Attributes:
        num_frames: frames per clip (T).
        sampling_rate: stride between sampled frames.
        short_side: frames are resized so their short side has this length.
        crop_size: side of the square crop (at most ``short_side``).
        test_segments: temporal clips per test video.
        test_crops: spatial crops per test clip (along the long side).
        flip: random horizontal flip in training (ignored for SSv2).
    """

    num_frames: int = 8
    sampling_rate: int = 4
    short_side: int = 224
    crop_size: int = 224
    test_segments: int = 4
    test_crops: int = 3
    flip: bool = True

    def __post_init__(self) -> None:
        for key in ("num_frames", "sampling_rate", "short_side", "crop_size"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"VideoProtocol.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("test_segments", "test_crops"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"VideoProtocol.{key} must be >= 1, got {getattr(self, key)}")
        if self.crop_size > self.short_side:
            raise ValueError(
                f"VideoProtocol.crop_size {self.crop_size} exceeds short_side {self.short_side}"
            )

    @property
    def span(self) -> int:
        """Frames covered by one clip: ``(num_frames - 1) * sampling_rate + 1``."""
        return (self.num_frames - 1) * self.sampling_rate + 1

    @property
    def views(self) -> int:
        """Test views per video: ``test_segments * test_crops``."""
        return self.test_segments * self.test_crops


class BudgetError(PebenchError, ValueError):
    """A budget that does not fit what it is asked to train (the message says why)."""


@dataclass(frozen=True)
class Budget:
    """One versioned training protocol.

    Attributes:
        id: versioned name, part of every run identity.
        epochs: training epochs of every trial and final run.
        warmup_epochs: linear warmup before the cosine decay (per step).
        batch_size: images per step.
        optimizer: ``"adamw"`` or ``"sgd"`` (momentum 0.9).
        lr_grid: learning rates searched.
        wd_grid: weight decays searched (trials = lr_grid × wd_grid).
        image_size: input side length.
        seeds: seeds of the final runs.
        search_seed: seed of the search trials (of their first replicate).
        search_replicates: runs per search trial, under seeds ``search_seed + r``; the
            selection ranks trials by the mean validation score over their replicates
            (:mod:`pebench.selection`). One run per trial picks the maximum of one noisy run.
        selection: how trials are ranked (:data:`pebench.selection.RULES`): ``"max"``, the
            highest mean; ``"smoothed"``, the highest mean smoothed with its lr neighbours.
            Recorded in every row as ``selection_rule``.
        precision_target: the difference of two suite means (accuracy points) the seed count
            was derived for, at 80 % power (``pebench estimate --precision``); ``None``: a
            budget not designed for a precision. The seed count is fixed for every row.
        backbone: default backbone (timm name) for suites using this budget.
        precision: ``"auto"`` = bf16 autocast on CUDA, fp32 on CPU.
        grad_clip: max gradient norm (``None`` = no clipping).
        subset: cap on examples per split (smoke budgets only; ``None`` = all).
        timeout_s: wall-clock limit of one run.
        description: one line for ``pebench list budgets``.
        video: clip sampling and test views of video suites (``None`` for image budgets).
        skip_bad: video only: drop undecodable videos (a recorded count) instead of failing.
        weights: default weights of :attr:`backbone` (``--weights`` overrides them): ``None`` =
            the backbone's pretrained weights (the embedded checkpoint of
            ``pebench_vit_micro``, the Hugging Face hub otherwise), ``"random"`` = random init
            (the smoke budgets: they run offline, their numbers measure nothing).
        purpose: what the budget is for, one phrase for ``pebench list budgets``.
    """

    id: str
    epochs: int
    warmup_epochs: int
    batch_size: int
    optimizer: Literal["adamw", "sgd"]
    lr_grid: tuple[float, ...]
    wd_grid: tuple[float, ...]
    image_size: int
    seeds: tuple[int, ...]
    search_seed: int
    backbone: str
    precision: Literal["auto", "fp32"] = "auto"
    grad_clip: float | None = None
    subset: int | None = None
    timeout_s: float = 3600.0
    description: str = ""
    video: VideoProtocol | None = None
    skip_bad: bool = False
    weights: str | None = None
    purpose: str = ""
    search_replicates: int = 1
    selection: Literal["max", "smoothed"] = "max"
    precision_target: float | None = None

    def __post_init__(self) -> None:
        if int(self.search_replicates) < 1:
            raise ValueError(f"Budget.search_replicates must be >= 1, got {self.search_replicates}")

    def search_seeds(self) -> tuple[int, ...]:
        """The seeds of one search trial's replicates."""
        return tuple(self.search_seed + r for r in range(self.search_replicates))

    def eval_batch_size(self, cuda: bool) -> int:
        """Evaluation batch: larger on a GPU for throughput (it cannot change the accuracy).

        On the CPU it stays the training batch, so CPU numbers are bit-identical to earlier rows.
        """
        return self.batch_size * (4 if cuda else 1)

    def weights_for(self, backbone: str | None, weights: str | None) -> str | None:
        """The weights a run uses: ``weights`` if given, else this budget's for its backbone.

        Args:
            backbone: ``--backbone`` (``None``: this budget's own backbone).
            weights: ``--weights`` (``None``: not given).

        Returns:
            ``weights`` when given; :attr:`weights` when the backbone is this budget's own;
            else ``None`` (the other backbone's pretrained weights).
        """
        if weights is not None:
            return weights
        return self.weights if backbone in (None, self.backbone) else None

    def check_task(self, task: Any) -> None:
        """Refuse a task of the other modality (image vs video) than this budget's.

        ``task`` is a :class:`pebench.datasets.TaskSpec` (read for its ``name`` and
        ``modality``; the budget imports nothing from ``pebench.datasets``).

        Raises:
            BudgetError: naming the task, its modality and the budget.
        """
        video_task = task.modality == "video"
        if video_task != (self.video is not None):
            kind, other = ("a video", "an image") if video_task else ("an image", "a video")
            raise BudgetError(
                f"task {task.name!r} is {kind} task but budget {self.id!r} is {other} budget; "
                f"choose {kind} budget (pebench list budgets)"
            )

    def trials(self) -> list[tuple[float, float]]:
        """The (lr, weight decay) grid in a fixed order."""
        return list(product(self.lr_grid, self.wd_grid))

    def as_dict(self) -> dict[str, Any]:
        """All fields, for logs and provenance."""
        return asdict(self)
