"""The training and evaluation loop every method shares (the core owns optimizer and schedule).

Under ``torch.distributed`` (a process group of world size ``W > 1``, e.g. started by
:mod:`pebench.sweep.ddp`), :func:`train` wraps the model in ``DistributedDataParallel`` itself and
follows the same global batches as a single process: rank ``r`` trains on ``global_batch[r::W]`` of
every global batch ``order[i : i + batch_size]``. :func:`evaluate` scores ``order[r::W]`` on each
rank and sums the correct counts, so every rank returns the same accuracy. Without a process group
both behave exactly as a single process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from pebench.budget import Budget
from pebench.data import Split, batches


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainStats:
    """What one training run measured."""

    train_loss: float
    train_time_s: float
    train_images_per_s: float


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised ``torch.distributed`` group, else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(value: float, op: str = "sum") -> float:
    """``value`` summed (or maxed) over all ranks (float64 on CPU: gloo and nccl both take it)."""
    import torch.distributed as dist

    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return float(t.item())


def _ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in ``DistributedDataParallel`` (kept as is when it already is one).

    ``find_unused_parameters`` stays off: every pebench method uses all of its trainable
    parameters in each forward pass (an unused one makes DDP fail on the second step).
    """
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        return model
    ids = None
    if device.type == "cuda":
        ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return DistributedDataParallel(model, device_ids=ids)


def _rank_batches(
    split: Split, order: torch.Tensor, batch_size: int, workers: int, rank: int, size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """``(x, y, global batch size)`` per global batch ``order[i : i + batch_size]``.

    With one process that is every batch of :func:`pebench.data.batches`. With ``size`` ranks,
    rank ``rank`` gets ``global_batch[rank::size]``: the slice of a full global batch always has
    ``len(range(rank, batch_size, size))`` examples, so chunking the concatenated slices by that
    length gives exactly this rank's slices. A slice of the last global batch may be empty; it is
    served as an empty batch so that every rank takes part in every step.

    Raises:
        ValueError: ``batch_size`` smaller than the world size.
    """
    if size == 1:
        for xb, yb in batches(split, order, batch_size, workers):
            yield xb, yb, len(yb)
        return
    if batch_size < size:
        raise ValueError(
            f"batch size {batch_size} is smaller than the world size {size}: "
            f"use at most {batch_size} processes"
        )
    starts = range(0, len(order), batch_size)
    local = torch.cat([order[i : i + batch_size][rank::size] for i in starts])
    it = batches(split, local, len(range(rank, batch_size, size)), workers)
    empty = None
    for i in starts:
        global_n = min(batch_size, len(order) - i)
        if rank < global_n:
            xb, yb = next(it)
        else:
            if empty is None:
                x0 = split.data[0][0]
                empty = x0.new_zeros((0, *x0.shape)), torch.zeros(0, dtype=torch.int64)
            xb, yb = empty
        yield xb, yb, global_n


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable params split into decayed (≥2-D weights) and not decayed (biases, norms, 1-D)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, budget: Budget, lr: float, wd: float) -> torch.optim.Optimizer:
    """The budget's optimizer over the trainable parameters."""
    groups = param_groups(model, wd)
    if budget.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    return torch.optim.SGD(groups, lr=lr, momentum=0.9)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def autocast(device: torch.device, budget: Budget):
    """bf16 autocast on CUDA under ``precision="auto"``, nothing on CPU."""
    if device.type == "cuda" and budget.precision == "auto":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _optimizer(
    model: nn.Module, budget: Budget, lr: float, wd: float, n: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimizer and its per-step schedule (warmup, then cosine) for ``n`` examples."""
    opt = make_optimizer(model, budget, lr, wd)
    steps_per_epoch = max(1, math.ceil(n / budget.batch_size))
    total = budget.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, budget.warmup_epochs * steps_per_epoch)
    )
    return opt, sched


def _loss(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, global_n: int, size: int
) -> tuple[torch.Tensor, float]:
    """The loss to back-propagate and the global batch's mean loss (the same on every rank)."""
    if size == 1:
        loss = F.cross_entropy(net(x), y)
        return loss, loss.item()
    local_sum = F.cross_entropy(net(x), y, reduction="sum")
    return local_sum * (size / global_n), _all_reduce(local_sum.item()) / global_n


def _epoch(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    params: list[nn.Parameter],
    budget: Budget,
    batches_: Iterator[tuple[torch.Tensor, torch.Tensor, int]],
    device: torch.device,
    epoch: int,
    size: int,
) -> tuple[float, int, float]:
    """One epoch of optimizer steps: ``(loss sum, examples, seconds in steps)``.

    ``params`` (the trainable parameters in model order) are what the gradient is clipped over.
    """
    loss_sum, loss_n, elapsed = 0.0, 0, 0.0
    for step, (xb, yb, global_n) in enumerate(batches_):
        x, y = xb.to(device, non_blocking=True), yb.to(device)
        t0 = time.perf_counter()
        with autocast(device, budget):
            loss, batch_loss = _loss(net, x, y, global_n, size)
        if not math.isfinite(batch_loss):
            raise Diverged(f"loss became {batch_loss} at epoch {epoch}, step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if budget.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, budget.grad_clip)
        opt.step()
        sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed += time.perf_counter() - t0
        loss_sum += batch_loss * global_n
        loss_n += global_n
    return loss_sum, loss_n, elapsed


def train(
    model: nn.Module,
    split: Split,
    budget: Budget,
    lr: float,
    weight_decay: float,
    seed: int,
    device: torch.device,
    progress: bool = False,
    desc: str = "train",
    workers: int = 0,
) -> TrainStats:
    """Train the trainable parameters of ``model`` on ``split`` for ``budget.epochs`` epochs.

    The example order of every epoch comes from a generator seeded with ``seed``; batches are
    converted on the fly (see :func:`pebench.data.batches`), ``workers`` only changes speed.

    Under ``torch.distributed`` with world size ``W > 1`` the model is wrapped in
    ``DistributedDataParallel`` here (pass the plain model, or an already wrapped one) and each
    rank takes its slice of every global batch (see :func:`_rank_batches`). DDP averages the
    gradients over ranks, so each rank's loss is its **sum** over its ``n_r`` examples times
    ``W / N`` (``N`` the global batch size): the average over ranks is then the mean over the
    global batch, also for an unequal last batch (or an empty slice). Ranks ``r > 0`` reseed the
    global RNG with ``seed * 1000 + r`` (dropout masks differ per rank). The reported loss is the
    mean over all ranks' examples, the throughput counts global examples over the slowest rank's
    time, and every rank returns the same stats.

    Raises:
        Diverged: when the loss (of the global batch, on every rank alike) is not finite.
        ValueError: a world size larger than ``budget.batch_size``.
    """
    from tqdm.auto import tqdm

    rank, size = world()
    model.to(device).train()
    net = model if size == 1 else _ddp(model, device)
    if rank > 0:  # dropout / drop-path masks of other ranks must not copy rank 0's
        torch.manual_seed(seed * 1000 + rank)
    n = len(split)
    opt, sched = _optimizer(model, budget, lr, weight_decay, n)
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    seen, elapsed, loss_sum, loss_n = 0, 0.0, 0.0, 0
    bar = tqdm(range(budget.epochs), desc=desc, leave=False, disable=not progress or rank != 0)
    for epoch in bar:
        split.data.set_epoch(epoch)
        order = torch.randperm(n, generator=gen)
        batches_ = _rank_batches(split, order, budget.batch_size, workers, rank, size)
        loss_sum, loss_n, dt = _epoch(
            net, opt, sched, params, budget, batches_, device, epoch, size
        )
        elapsed += dt
        seen += loss_n
        bar.set_postfix(loss=f"{loss_sum / loss_n:.3f}")
    if size > 1:
        elapsed = _all_reduce(elapsed, "max")
    return TrainStats(loss_sum / max(1, loss_n), elapsed, seen / elapsed if elapsed else 0.0)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: Split,
    budget: Budget,
    device: torch.device,
    workers: int = 0,
) -> tuple[float, float]:
    """Top-1 accuracy (fraction) and examples/s of ``model`` in eval mode.

    Multi-view splits (video: temporal segments × spatial crops) give items of shape
    ``(views, ...)``; the model sees every view and the **logits are averaged** over views
    before the argmax. Throughput counts examples (clips), not views.

    Under ``torch.distributed`` with world size ``W > 1`` rank ``r`` scores ``order[r::W]``; the
    correct counts are summed over ranks (every rank returns the same accuracy) and the
    throughput is all examples over the slowest rank's time.
    """
    rank, size = world()
    model.to(device).eval()
    correct, elapsed = 0, 0.0
    order = torch.arange(len(split))[rank::size]
    for xb, yb in batches(split, order, budget.batch_size, workers):
        x = xb.to(device, non_blocking=True)
        t0 = time.perf_counter()
        with autocast(device, budget):
            if split.views > 1:
                logits = model(x.flatten(0, 1)).float().view(len(yb), split.views, -1).mean(1)
            else:
                logits = model(x)
            pred = logits.argmax(dim=-1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed += time.perf_counter() - t0
        correct += int((pred.cpu() == yb).sum())
    if size > 1:
        correct, elapsed = int(_all_reduce(correct)), _all_reduce(elapsed, "max")
    return correct / len(split), len(split) / elapsed if elapsed else 0.0
