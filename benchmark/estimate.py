"""Cost of a sweep before running it: images seen × FLOPs per image ÷ a sustained throughput.

FLOPs are *counted*, not guessed: the method is attached to the budget's backbone built on the
``meta`` device (no memory, no weights, about a second even for ViT-B), and torch's flop counter
(matmuls and convolutions) records one eval forward and one training step (forward + backward).
The backward therefore costs what it really costs for that method: nothing through the backbone
for a linear probe, input gradients only for a frozen backbone, input and weight gradients for
full fine-tuning.

Images per task follow the budget: every search trial (each of its replicates) trains
``epochs × |train|`` and evaluates ``|val|``; every final seed trains ``epochs × |trainval|`` and
evaluates ``|test|`` (× the test views of a multi-view protocol). The time is ``FLOPs ÷ sustained
FLOP/s``: the sustained figure is the user's (measured with ``pebench bench`` on their GPU, or a
stated fraction of its peak), so the estimate says which one it used; or, with ``--measure``,
images ÷ measured images/s plus a measured fixed cost per run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from pebench.backbones import create_backbone
from pebench.budget import Budget
from pebench.datasets import TaskSpec
from pebench.method import prepare
from pebench.methods import build_method
from pebench.metrics import step_flops


@dataclass(frozen=True)
class TaskCost:
    """Images and FLOPs of one task's search trials and final runs."""

    task: str
    train_images: int
    eval_images: int
    flops: float
    runs: int = 0


@dataclass(frozen=True)
class Estimate:
    """What a sweep will cost."""

    method: str
    budget: str
    backbone: str
    forward_flops: float
    train_step_flops: float
    tasks: tuple[TaskCost, ...]

    @property
    def flops(self) -> float:
        """Total FLOPs of the sweep."""
        return sum(t.flops for t in self.tasks)

    def hours(self, sustained_tflops: float) -> float:
        """Wall-clock hours at ``sustained_tflops`` (10^12 FLOP/s actually achieved)."""
        return self.flops / (sustained_tflops * 1e12) / 3600

    @property
    def runs(self) -> int:
        """Runs of the sweep (search trials and final seeds of every task)."""
        return sum(t.runs for t in self.tasks)

    def measured_hours(
        self, train_per_s: float, eval_per_s: float, run_overhead_s: float = 0.0
    ) -> float:
        """Wall-clock hours at measured images/s on this device, plus a fixed cost per run."""
        train = sum(t.train_images for t in self.tasks)
        evals = sum(t.eval_images for t in self.tasks)
        return (train / train_per_s + evals / eval_per_s + self.runs * run_overhead_s) / 3600

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {
            "method": self.method,
            "budget": self.budget,
            "backbone": self.backbone,
            "forward_gflops": self.forward_flops / 1e9,
            "train_step_gflops": self.train_step_flops / 1e9,
            "train_images": sum(t.train_images for t in self.tasks),
            "eval_images": sum(t.eval_images for t in self.tasks),
            "pflops": self.flops / 1e15,
            "runs": self.runs,
            "tasks": [vars(t) for t in self.tasks],
        }


#: published list sizes of tasks whose split sizes the spec cannot fix (protocol.md §6); the
#: validation carve-out is taken as 10 % of the official training list
NOMINAL = {"video/ssv2": (168_913, 24_777), "video/hmdb51": (3_570, 1_530)}


def _size(spec: TaskSpec, role: str, budget: Budget) -> int:
    split = spec.splits[role]
    if split in spec.sizes:
        n = spec.sizes[split]
    elif spec.name in NOMINAL:
        trainval, test = NOMINAL[spec.name]
        n = {"train": trainval - trainval // 10, "val": trainval // 10, "trainval": trainval}.get(
            role, test
        )
    else:
        raise ValueError(
            f"task {spec.name!r} does not fix the size of split {split!r}; "
            "its cost cannot be estimated before the data is prepared"
        )
    return min(n, budget.subset) if budget.subset else n


def _flops(
    method: str, overrides: dict, preset: str, backbone: str, budget: Budget, num_classes: int
) -> tuple[float, float]:
    frames = {"num_frames": budget.video.num_frames} if budget.video else {}
    with torch.device("meta"):
        model = create_backbone(backbone, "random", image_size=budget.image_size, **frames).model
        prepare(model, build_method(method, overrides, preset), num_classes)
    return step_flops(model, budget.image_size)


def estimate(
    method: str,
    tasks: list[TaskSpec],
    budget: Budget,
    backbone: str | None = None,
    overrides: dict[str, Any] | None = None,
    preset: str = "default",
    test_views: int = 1,
) -> Estimate:
    """Count the FLOPs of ``method`` under ``budget`` on ``tasks`` (nothing is trained).

    Raises:
        ValueError: a task whose split sizes are not fixed by its spec.
    """
    backbone = backbone or budget.backbone
    costs, fwd, step = [], math.nan, math.nan
    # only the head depends on the task, and its FLOPs are affine in the class count: count
    # two heads and extend the line (exact)
    f1, s1 = _flops(method, overrides or {}, preset, backbone, budget, 1)
    f2, s2 = _flops(method, overrides or {}, preset, backbone, budget, 2)
    for spec in tasks:
        fwd = f1 + (f2 - f1) * (spec.num_classes - 1)
        step = s1 + (s2 - s1) * (spec.num_classes - 1)
        trials = len(budget.trials()) * len(budget.search_seeds())  # replicates run each trial
        seeds = len(budget.seeds)
        train = budget.epochs * (
            trials * _size(spec, "train", budget) + seeds * _size(spec, "trainval", budget)
        )
        evals = trials * _size(spec, "val", budget)
        tests = seeds * _size(spec, "test", budget) * test_views
        flops = train * step + (evals + tests) * fwd
        costs.append(TaskCost(spec.name, train, evals + tests, flops, trials + seeds))
    return Estimate(method, budget.id, backbone, fwd, step, tuple(costs))


def format_table(rows: list[dict[str, Any]], budget: Budget, tasks: int) -> str:
    """``pebench estimate``'s text: one line on the budget, then one row per method.

    With measured throughputs (``--measure``) the line says where they were measured and each
    row gives its training images/s, the TFLOP/s it implies and the fixed cost per run.
    """
    measured = bool(rows) and "measured_on" in rows[0]
    rate = (
        f"throughput measured on {rows[0]['measured_on']} (harness, random weights)"
        if measured
        else f"at {rows[0]['tflops'] if rows else 0.0:g} TFLOP/s"
    )
    lines = [
        f"budget {budget.id}: {tasks} task(s), {len(budget.trials())} trials + "
        f"{len(budget.seeds)} seeds x {budget.epochs} epochs; {rate}",
        f"{'method':<20} {'fwd GF':>8} {'step GF':>8} {'train imgs':>12} {'eval imgs':>11} "
        f"{'PFLOP':>8} {'GPU h':>7}"
        + (f" {'img/s':>8} {'TFLOP/s':>8} {'s/run':>6}" if measured else ""),
    ]
    for o in rows:
        extra = (
            f" {o['measured_train_images_per_s']:>8.1f} {o['tflops']:>8.3g} "
            f"{o['measured_run_overhead_s']:>6.1f}"
            if measured
            else ""
        )
        lines.append(
            f"{o['method']:<20} {o['forward_gflops']:>8.2f} {o['train_step_gflops']:>8.2f} "
            f"{o['train_images']:>12,} {o['eval_images']:>11,} {o['pflops']:>8.1f} "
            f"{o['hours']:>7.2f}{extra}"
        )
    return "\n".join(lines)


__all__ = ["Estimate", "TaskCost", "estimate", "format_table"]
