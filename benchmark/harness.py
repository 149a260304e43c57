"""``pebench bench --harness``: pebench's training and evaluation loops against a bare loop.

The harness (:func:`pebench.train.train` and :func:`pebench.train.evaluate` fed by a uint8
:class:`pebench.data.ImageArray`) and a bare timm + torch loop do the same work on the same
model, batch, optimizer, schedule, gradient clipping and data, in one process, interleaved round
by round (harness, bare, harness, bare, ...), so machine drift hits both alike. The bare loop is
what a user would write with every batch already converted on the device: the ratio
harness / bare therefore charges the harness with its data path (gather, transfer, conversion),
its checks and its bookkeeping. Each figure is the median of the per-round ratios with their
interquartile range; a ratio whose spread is larger than its distance from 1 is flagged as not
distinguishable from 1 on this machine.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pebench.backbones import create_backbone
from pebench.budget import Budget, get_budget
from pebench.data import ImageArray, Split, place
from pebench.datasets.catalog import get_suite
from pebench.device import setup
from pebench.method import Method, ParamCount, prepare
from pebench.methods import build_method
from pebench.metrics import step_flops
from pebench.report import mdtable
from pebench.train import (
    autocast,
    eval_batch_size,
    evaluate,
    optimizer_and_schedule,
    sync,
    train,
)

#: learning rate of the measured steps (small: no run may diverge while it is timed)
LR = 1e-4


@dataclass
class Ratio:
    """Per-round harness / bare ratios of one figure, summarised."""

    median: float
    q1: float
    q3: float
    harness_per_s: float
    bare_per_s: float

    @property
    def spread(self) -> float:
        """Interquartile range of the per-round ratios."""
        return self.q3 - self.q1

    @property
    def distinguishable(self) -> bool:
        """Whether the ratio's distance from 1 exceeds its spread."""
        return abs(self.median - 1.0) > self.spread

    def text(self) -> str:
        """``0.98 [0.96–1.01]``, with ``~`` when not distinguishable from 1."""
        flag = "" if self.distinguishable else " ~"
        return f"{self.median:.2f} [{self.q1:.2f}–{self.q3:.2f}]{flag}"


def summarise(harness: list[float], bare: list[float]) -> Ratio:
    """The :class:`Ratio` of paired per-round throughputs (examples/s)."""
    ratios = sorted(h / b for h, b in zip(harness, bare, strict=True))
    q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
    return Ratio(
        statistics.median(ratios),
        q[0],
        q[2],
        statistics.median(harness),
        statistics.median(bare),
    )


@dataclass
class HarnessRow:
    """One method's harness / bare ratios (``merged`` only for methods that merge)."""

    method: str
    train: Ratio
    eval: Ratio
    merged: Ratio | None


def method_model(
    name: str,
    backbone: str,
    image_size: int,
    num_classes: int,
    device: torch.device,
    preset: str | None = None,
    num_frames: int | None = None,
) -> tuple[nn.Module, Method, ParamCount]:
    """``name`` attached to a fresh random-init ``backbone`` (seed 0), prepared, on ``device``.

    What every speed measurement starts from (``pebench bench``, ``--harness``, ``estimate
    --measure``): the same backbone for every method, so only the method differs.
    """
    torch.manual_seed(0)
    frames = {"num_frames": num_frames} if num_frames else {}
    model = create_backbone(backbone, "random", image_size=image_size, **frames).model
    method = build_method(name, preset=preset)
    count = prepare(model, method, num_classes)
    return model.to(device), method, count


def bare_train(
    model: nn.Module,
    xs: list[torch.Tensor],
    ys: list[torch.Tensor],
    budget: Budget,
    device: torch.device,
    seed: int = 0,
) -> float:
    """One epoch of the bare loop over ready batches; returns examples/s.

    The same optimizer (and fused kernel on CUDA), schedule, autocast and clipping as the
    harness, in the plainest code: no data path, no checks, no bookkeeping.
    """
    torch.manual_seed(seed)
    model.train()
    n = sum(len(y) for y in ys)
    opt, sched = optimizer_and_schedule(model, budget, LR, 0.0, n, device)
    params = [p for p in model.parameters() if p.requires_grad]
    sync(device)
    t0 = time.perf_counter()
    for x, y in zip(xs, ys, strict=True):
        with autocast(device, budget):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if budget.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, budget.grad_clip)
        opt.step()
        sched.step()
    sync(device)
    return n / (time.perf_counter() - t0)


@torch.no_grad()
def bare_eval(
    model: nn.Module, xs: list[torch.Tensor], budget: Budget, device: torch.device
) -> float:
    """The bare evaluation loop over ready batches; returns examples/s."""
    model.eval()
    sync(device)
    t0 = time.perf_counter()
    for x in xs:
        with autocast(device, budget):
            model(x).argmax(dim=-1)
    sync(device)
    return sum(len(x) for x in xs) / (time.perf_counter() - t0)


def harness_train(
    model: nn.Module, split: Split, budget: Budget, device: torch.device, seed: int = 0
) -> float:
    """One epoch through :func:`pebench.train.train`; returns examples/s (wall, data included)."""
    torch.manual_seed(seed)
    sync(device)
    t0 = time.perf_counter()
    train(model, split, budget, LR, 0.0, seed, device)
    sync(device)
    return len(split) / (time.perf_counter() - t0)


def harness_eval(model: nn.Module, split: Split, budget: Budget, device: torch.device) -> float:
    """:func:`pebench.train.evaluate`, timed from outside; returns examples/s."""
    sync(device)
    t0 = time.perf_counter()
    evaluate(model, split, budget, device)
    sync(device)
    return len(split) / (time.perf_counter() - t0)


def synthetic_split(
    model: nn.Module, n: int, image_size: int, num_classes: int, seed: int = 0
) -> Split:
    """``n`` random uint8 images at ``image_size`` with labels (a split in the real format)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, n)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    mean, std = cfg.get("mean", (0.5,) * 3), cfg.get("std", (0.5,) * 3)
    data = ImageArray(images, labels, image_size, tuple(mean), tuple(std))
    return Split(data, torch.from_numpy(data.labels), "synthetic")


def ready_batches(
    split: Split, order: torch.Tensor, batch_size: int, device: torch.device
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The bare loop's data: every batch converted on ``device`` ahead of time."""
    xs, ys = [], []
    for i in range(0, len(order), batch_size):
        x, y = split.data.batch(order[i : i + batch_size], device)
        xs.append(x)
        ys.append(y)
    return xs, ys


def bench_budget(budget: str | None) -> Budget:
    """The budget whose optimizer, precision and clipping a benchmark step uses.

    Args:
        budget: a budget id; ``None`` for the demo suite's default budget.
    """
    return get_budget(budget or get_suite("demo").default_budget)


def run_harness_bench(
    methods: list[str],
    backbone: str = "pebench_vit_micro",
    image_size: int = 32,
    batch_size: int = 64,
    steps: int = 5,
    rounds: int = 5,
    device: str = "cpu",
    budget: str | None = None,
    num_classes: int = 10,
    say: Callable[[str], None] | None = None,
) -> list[HarnessRow]:
    """Harness / bare ratios of training, evaluation and merged evaluation per method.

    ``say`` gets progress lines: after the first method's warm-up round, the cost of the whole
    measurement extrapolated from it; after each method, its time and what is left.
    """
    say = say or (lambda line: None)
    dev = setup(device)
    t_start = time.perf_counter()
    base = replace(
        bench_budget(budget),
        epochs=1,
        warmup_epochs=0,
        batch_size=batch_size,
        image_size=image_size,
    )
    out = []
    for i, name in enumerate(methods):
        t_method = time.perf_counter()
        model, method, _ = method_model(name, backbone, image_size, num_classes, dev)
        bare = copy.deepcopy(model)
        merged = method.merge(copy.deepcopy(model)).eval() if method.mergeable_on(model) else None
        split = synthetic_split(model, steps * batch_size, image_size, num_classes)
        place([split], dev, 0.5)
        order = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))
        xs, ys = ready_batches(split, order, batch_size, dev)
        eval_order = torch.arange(len(split))
        exs, _ = ready_batches(split, eval_order, eval_batch_size(base, dev), dev)
        samples: dict[str, list[float]] = {k: [] for k in ("ht", "bt", "he", "be", "hm", "bm")}
        for r in range(rounds + 1):  # round 0 warms up and is not recorded
            figures = {
                "ht": harness_train(model, split, base, dev),
                "bt": bare_train(bare, xs, ys, base, dev),
                "he": harness_eval(model, split, base, dev),
                "be": bare_eval(bare, exs, base, dev),
            }
            if merged is not None:
                figures["hm"] = harness_eval(merged, split, base, dev)
                figures["bm"] = bare_eval(merged, exs, base, dev)
            if r:
                for k, v in figures.items():
                    samples[k].append(v)
            elif i == 0:  # the warm-up round of the first method sizes the whole measurement
                per_method = (time.perf_counter() - t_method) * (rounds + 1)
                say(
                    f"{len(methods)} method(s) x {rounds + 1} rounds of {steps} steps; the first "
                    f"round took {time.perf_counter() - t_method:.1f} s: about "
                    f"{duration(per_method * len(methods))} in all"
                )
        done = time.perf_counter()
        say(
            f"[{i + 1}/{len(methods)}] {name}: {done - t_method:.1f} s"
            + (
                f"; about {duration((done - t_start) / (i + 1) * (len(methods) - i - 1))} left"
                if i + 1 < len(methods)
                else ""
            )
        )
        out.append(
            HarnessRow(
                name,
                summarise(samples["ht"], samples["bt"]),
                summarise(samples["he"], samples["be"]),
                summarise(samples["hm"], samples["bm"]) if merged is not None else None,
            )
        )
    return out


@dataclass(frozen=True)
class Measured:
    """What :func:`measure` found: steady-state speeds and the fixed cost of one run.

    Attributes:
        train_images_per_s: training images/s after the warm-up epoch.
        eval_images_per_s: evaluation images/s after the warm-up pass.
        run_overhead_s: seconds one run spends beyond its images at those rates: building the
            model, counting its FLOPs, placing the data, and the first epoch's and first
            evaluation's excess over the steady rate (warm-up, kernel selection). Not included:
            the run process's start and reading weights and data from disk.
    """

    train_images_per_s: float
    eval_images_per_s: float
    run_overhead_s: float


def measure(
    method: str,
    budget: Budget,
    backbone: str,
    device: str,
    num_classes: int,
    steps: int = 20,
    preset: str | None = None,
    say: Callable[[str], None] | None = None,
) -> Measured:
    """Measured speeds and per-run overhead of ``method`` under ``budget`` on ``device``.

    The harness itself (the path a run takes, with the process settings runs use) on random
    weights and synthetic uint8 images at the budget's size and batch: the model is built and
    its FLOPs counted as a run does, then a warm-up epoch of ``steps`` steps and a warm-up
    evaluation, then a timed epoch and evaluation. This is what ``pebench estimate --measure``
    divides the sweep's images by, adding the overhead once per run.
    """
    t_start = time.perf_counter()
    dev = setup(device)
    b = replace(budget, epochs=1, warmup_epochs=0)
    frames = budget.video.num_frames if budget.video else None
    model, _, _ = method_model(method, backbone, b.image_size, num_classes, dev, preset, frames)
    step_flops(model, b.image_size)  # every run counts its FLOPs before training
    split = synthetic_split(model, steps * b.batch_size, b.image_size, num_classes)
    place([split], dev, 0.5)
    t_warm = time.perf_counter()
    harness_train(model, split, b, dev)
    warm_s = time.perf_counter() - t_warm
    if say is not None:  # the warm-up epoch sizes the rest: a timed epoch and two evaluations
        say(
            f"{method}: warm-up epoch of {steps} steps took {warm_s:.1f} s; about "
            f"{duration(2 * warm_s)} more for this method"
        )
    harness_eval(model, split, b, dev)
    warm_s = time.perf_counter() - t_warm
    train_per_s, eval_per_s = (
        harness_train(model, split, b, dev),
        harness_eval(model, split, b, dev),
    )
    steady_s = len(split) / train_per_s + len(split) / eval_per_s
    overhead = (t_warm - t_start) + max(0.0, warm_s - steady_s)
    return Measured(train_per_s, eval_per_s, overhead)


def duration(seconds: float) -> str:
    """``"45 s"``, ``"3 min"``, ``"1.5 h"``: a cost estimate in words."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def to_markdown(rows: list[HarnessRow], header: str = "") -> str:
    """A markdown table of :func:`run_harness_bench` rows, then the warnings.

    One warning line per figure whose spread is larger than its distance from 1.
    """
    lines = [header] if header else []
    head = ["method", "train img/s (harness / bare)", "train ×", "eval ×", "merged eval ×"]
    body, warnings = [], []
    for r in rows:
        merged = r.merged.text() if r.merged else "—"
        speed = f"{r.train.harness_per_s:.0f} / {r.train.bare_per_s:.0f}"
        body.append([r.method, speed, r.train.text(), r.eval.text(), merged])
        for what, ratio in (("train", r.train), ("eval", r.eval), ("merged eval", r.merged)):
            if ratio is not None and not ratio.distinguishable:
                warnings.append(
                    f"warning: {r.method} {what}: spread {ratio.spread:.2f} is larger than the "
                    f"difference from 1 ({abs(ratio.median - 1):.2f}): not distinguishable here"
                )
    lines += mdtable.table(head, body, align="lrrrr")
    lines.append("")
    lines.append("× = median of per-round harness / bare ratios [interquartile range]")
    return "\n".join(lines + warnings) + "\n"


def as_dicts(rows: list[HarnessRow]) -> list[dict[str, Any]]:
    """Rows as plain dicts (``--json``)."""
    from dataclasses import asdict

    return [asdict(r) for r in rows]


__all__ = [
    "HarnessRow",
    "Measured",
    "Ratio",
    "as_dicts",
    "bare_eval",
    "bare_train",
    "harness_eval",
    "harness_train",
    "measure",
    "method_model",
    "run_harness_bench",
    "summarise",
    "to_markdown",
]
