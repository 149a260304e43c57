"""``pebench bench``: side-by-side speed of every method relative to the frozen backbone.

All methods are measured in one process, interleaved round by round (method A, B, C, A, B, C,
...), so machine drift hits every method alike; each throughput is the median over rounds, and
each ratio the median of the per-round ratios with their interquartile range (a ratio whose
spread is larger than its distance from 1 is marked ``~``: not distinguishable on this machine).
The reference is ``linear`` (frozen backbone + linear head). For mergeable methods the merged
model's eval speed is measured too (target: within noise of 1.0 × the backbone).
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pebench.backbones.videomae import example_input
from pebench.budget import Budget
from pebench.device import setup
from pebench.harness import Ratio, bench_budget, method_model, summarise
from pebench.metrics import checkpoint_bytes, flops_per_image
from pebench.report import mdtable
from pebench.train import autocast, make_optimizer, sync


@dataclass
class BenchRow:
    """One method's measurements (ratios are relative to ``linear``)."""

    method: str
    params_method: int
    flops_per_image: float
    checkpoint_bytes: int
    train_images_per_s: float
    eval_images_per_s: float
    merged_eval_images_per_s: float | None
    train_ratio: float = float("nan")
    eval_ratio: float = float("nan")
    merged_eval_ratio: float | None = None
    #: interquartile ranges of the per-round ratios
    train_iqr: tuple[float, float] = (float("nan"), float("nan"))
    eval_iqr: tuple[float, float] = (float("nan"), float("nan"))
    merged_eval_iqr: tuple[float, float] | None = None


def _time_train(
    model: Any, x: torch.Tensor, y: torch.Tensor, steps: int, dev: torch.device, budget: Budget
) -> float:
    """Training steps as runs take them: the budget's optimizer (fused on CUDA), autocast, clip."""
    opt = make_optimizer(model, budget, 1e-4, 0.0, dev)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        with autocast(dev, budget):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if budget.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, budget.grad_clip)
        opt.step()
    sync(dev)
    return steps * len(y) / (time.perf_counter() - t0)


@torch.no_grad()
def _time_eval(model: Any, x: torch.Tensor, steps: int, dev: torch.device, budget: Budget) -> float:
    model.eval()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        with autocast(dev, budget):
            model(x)
    sync(dev)
    return steps * len(x) / (time.perf_counter() - t0)


def _prepared(
    names: list[str], backbone: str, image_size: int, num_classes: int, dev: torch.device
) -> tuple[dict[str, nn.Module], dict[str, nn.Module], dict[str, BenchRow]]:
    """Each method on a fresh random backbone (and merged, where it can be), with its counts."""
    models, merged, rows = {}, {}, {}
    for name in names:
        model, method, count = method_model(name, backbone, image_size, num_classes, dev)
        models[name] = model
        if method.mergeable_on(model):
            merged[name] = method.merge(copy.deepcopy(model)).eval()
        rows[name] = BenchRow(
            method=name,
            params_method=count.method,
            flops_per_image=flops_per_image(model, image_size, dev),
            checkpoint_bytes=checkpoint_bytes(model),
            train_images_per_s=0.0,
            eval_images_per_s=0.0,
            merged_eval_images_per_s=None,
        )
    return models, merged, rows


def run_bench(
    methods: list[str],
    backbone: str = "pebench_vit_micro",
    image_size: int = 32,
    batch_size: int = 64,
    steps: int = 5,
    rounds: int = 5,
    device: str = "cpu",
    num_classes: int = 10,
    budget: str | None = None,
) -> list[BenchRow]:
    """Measure every method in ``methods`` (``linear`` is always included as the reference).

    Steps are taken as runs take them, with ``budget``'s optimizer (fused kernels on CUDA),
    precision (bf16 autocast on CUDA) and gradient clipping, and the process settings of runs.
    """
    dev = setup(device)
    b = bench_budget(budget)
    names = ["linear"] + [m for m in methods if m != "linear"]
    models, merged, rows = _prepared(names, backbone, image_size, num_classes, dev)
    g = torch.Generator().manual_seed(0)
    x = example_input(models[names[0]], batch_size, image_size=image_size, generator=g).to(dev)
    y = torch.randint(0, num_classes, (batch_size,), generator=g).to(dev)
    samples: dict[str, dict[str, list[float]]] = {
        n: {"train": [], "eval": [], "merged": []} for n in names
    }
    for name in names:  # warm-up round, not recorded
        _time_train(models[name], x, y, 1, dev, b)
        _time_eval(models[name], x, 1, dev, b)
    for _ in range(rounds):
        for name in names:
            samples[name]["train"].append(_time_train(models[name], x, y, steps, dev, b))
            samples[name]["eval"].append(_time_eval(models[name], x, steps, dev, b))
            if name in merged:
                samples[name]["merged"].append(_time_eval(merged[name], x, steps, dev, b))
    ref = samples["linear"]
    for name in names:
        s, r = samples[name], rows[name]
        r.train_images_per_s = statistics.median(s["train"])
        r.eval_images_per_s = statistics.median(s["eval"])
        train, evals = summarise(s["train"], ref["train"]), summarise(s["eval"], ref["eval"])
        r.train_ratio, r.train_iqr = train.median, (train.q1, train.q3)
        r.eval_ratio, r.eval_iqr = evals.median, (evals.q1, evals.q3)
        if s["merged"]:
            merged = summarise(s["merged"], ref["eval"])
            r.merged_eval_images_per_s = statistics.median(s["merged"])
            r.merged_eval_ratio, r.merged_eval_iqr = merged.median, (merged.q1, merged.q3)
    return list(rows.values())


def to_markdown(rows: list[BenchRow], header: str = "") -> str:
    """A markdown table of :func:`run_bench` rows."""
    lines = [header] if header else []
    head = ["method", "params", "GFLOPs/img", "ckpt KiB", "train img/s", "train ×", "eval img/s"]
    head += ["eval ×", "merged eval ×"]
    body = []
    for r in rows:
        merged = (
            _ratio(r.merged_eval_ratio, r.merged_eval_iqr)
            if r.merged_eval_ratio is not None and r.merged_eval_iqr is not None
            else "—"
        )
        body.append(
            [
                r.method,
                f"{r.params_method:,}",
                f"{r.flops_per_image / 1e9:.4f}",
                f"{r.checkpoint_bytes / 1024:.1f}",
                f"{r.train_images_per_s:.0f}",
                _ratio(r.train_ratio, r.train_iqr),
                f"{r.eval_images_per_s:.0f}",
                _ratio(r.eval_ratio, r.eval_iqr),
                merged,
            ]
        )
    lines += mdtable.table(head, body, align="lrrrrrrrr")
    lines += ["", "× = median of per-round ratios to linear [interquartile range]; ~: the spread "
              "is larger than the difference from 1"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _ratio(median: float, iqr: tuple[float, float]) -> str:
    return Ratio(median, iqr[0], iqr[1], math.nan, math.nan).text()


def as_dicts(rows: list[BenchRow]) -> list[dict[str, Any]]:
    """Rows as plain dicts (``--json``)."""
    return [asdict(r) for r in rows]
