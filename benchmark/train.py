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
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pebench.budget import Budget
from pebench.data import Split, batches
from pebench.runlog import EpochRecord


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainStats:
    """What one training run measured.

    ``train_images_per_s`` is over all epochs (warm-up and any ``torch.compile`` time included);
    ``steady_images_per_s`` over epochs ``1 ..`` (NaN with one epoch), and ``first_epoch_s`` is
    the first epoch's wall time: its excess over a steady epoch is the one-off cost (compilation,
    kernel selection, allocator warm-up). ``data_time_s`` is host time spent producing batches
    (gathering, pinning, queueing copies and conversion), not device time.
    """

    train_loss: float
    train_time_s: float
    train_images_per_s: float
    data_time_s: float = 0.0
    steady_images_per_s: float = math.nan
    first_epoch_s: float = math.nan


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
    split: Split,
    order: torch.Tensor,
    batch_size: int,
    workers: int,
    rank: int,
    size: int,
    device: torch.device | None = None,
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
        for xb, yb in batches(split, order, batch_size, workers, device):
            yield xb, yb, len(yb)
        return
    if batch_size < size:
        raise ValueError(
            f"batch size {batch_size} is smaller than the world size {size}: "
            f"use at most {batch_size} processes"
        )
    starts = range(0, len(order), batch_size)
    local = torch.cat([order[i : i + batch_size][rank::size] for i in starts])
    it = batches(split, local, len(range(rank, batch_size, size)), workers, device)
    empty = None
    for i in starts:
        global_n = min(batch_size, len(order) - i)
        if rank < global_n:
            xb, yb = next(it)
        else:
            if empty is None:
                x0 = split.data[0][0]
                empty = (
                    x0.new_zeros((0, *x0.shape), device=device),
                    torch.zeros(0, dtype=torch.int64, device=device),
                )
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


def make_optimizer(
    model: nn.Module, budget: Budget, lr: float, wd: float, device: torch.device | None = None
) -> torch.optim.Optimizer:
    """The budget's optimizer over the trainable parameters (fused kernels on CUDA).

    The fused CUDA implementations compute the same update as the default ones (to round-off)
    in one kernel launch instead of one per parameter group and op; on the CPU the default
    (``foreach``) implementation is kept, so CPU numbers do not move.
    """
    groups = param_groups(model, wd)
    fused = {"fused": True} if device is not None and device.type == "cuda" else {}
    if budget.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), **fused)
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, **fused)


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


def optimizer_and_schedule(
    model: nn.Module, budget: Budget, lr: float, wd: float, n: int, device: torch.device
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimizer and its per-step schedule (warmup, then cosine) for ``n`` examples."""
    opt = make_optimizer(model, budget, lr, wd, device)
    steps_per_epoch = max(1, math.ceil(n / budget.batch_size))
    total = budget.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, budget.warmup_epochs * steps_per_epoch)
    )
    return opt, sched


#: optimizer steps between two checks of the loss (each check waits for the device once)
CHECK_EVERY = 25


def _reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over all ranks, on its device, without waiting for it on the host."""
    import torch.distributed as dist

    if dist.get_backend() != "nccl":  # gloo reduces host tensors
        t = t.cpu()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _loss(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, global_n: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss to back-propagate and the global batch's loss **sum** (float64, on the device).

    Neither is read on the host here: the caller accumulates the sums and checks them every
    :data:`CHECK_EVERY` steps, so the host never waits for the device inside a window.
    """
    if size == 1:
        loss = F.cross_entropy(net(x), y)
        return loss, loss.detach().double() * global_n
    local_sum = F.cross_entropy(net(x), y, reduction="sum")
    return local_sum * (size / global_n), _reduce_sum(local_sum.detach().double())


@dataclass
class _LossSum:
    """The epoch's running loss sum, kept on the device; read only when checked.

    One running sum (not one per window) adds the steps' sums in the same order as reading each
    step's loss would, so the float64 total is bit-identical to that. Losses are ≥ 0, so once a
    step's loss is NaN or infinite the total stays non-finite.
    """

    first_step: int = 0
    total: torch.Tensor | None = None

    def add(self, loss_sum: torch.Tensor) -> None:
        self.total = loss_sum if self.total is None else self.total + loss_sum.to(self.total.device)

    def check(self, epoch: int, step: int) -> float:
        """The total so far as a float (waits for the device); the next window starts after it.

        Raises:
            Diverged: the total is not finite: a step of ``first_step .. step`` diverged.
        """
        value = 0.0 if self.total is None else float(self.total.item())
        if not math.isfinite(value):
            where = f"step {step}" if step == self.first_step else f"steps {self.first_step}-{step}"
            raise Diverged(f"loss became {value} at epoch {epoch}, {where}")
        self.first_step = step + 1
        return value


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
    """One epoch of optimizer steps: ``(loss sum, examples, seconds waiting for batches)``.

    ``params`` (the trainable parameters in model order) are what the gradient is clipped over.
    The loss is accumulated on the device and read every :data:`CHECK_EVERY` steps and at the
    end (in float64, the same sums in the same order as reading each step would give).
    """
    losses, loss_n, data_s, step = _LossSum(), 0, 0.0, -1
    it = iter(batches_)
    while True:
        t0 = time.perf_counter()
        item = next(it, None)
        data_s += time.perf_counter() - t0
        if item is None:
            break
        step += 1
        x, y, global_n = item  # already on the device (pebench.data.batches)
        with autocast(device, budget):
            loss, batch_sum = _loss(net, x, y, global_n, size)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if budget.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, budget.grad_clip)
        opt.step()
        sched.step()
        losses.add(batch_sum)
        loss_n += global_n
        if (step + 1) % CHECK_EVERY == 0:
            losses.check(epoch, step)
    return losses.check(epoch, step), loss_n, data_s


def sync(device: torch.device) -> None:
    """Wait for ``device`` (CUDA) to finish what was queued; nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compiled(model: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(model)`` when ``enabled`` (the parameters stay the model's own)."""
    return torch.compile(model) if enabled else model


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
    compile: bool = False,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    epoch_val: Callable[[], float] | None = None,
) -> TrainStats:
    """Train the trainable parameters of ``model`` on ``split`` for ``budget.epochs`` epochs.

    The example order of every epoch comes from a generator seeded with ``seed``; batches are
    converted on the device (see :func:`pebench.data.batches`), ``workers`` only changes speed.
    The host never waits for the device inside a window of :data:`CHECK_EVERY` steps; timing
    is epoch wall time (the device is waited for at each epoch's end), and ``data_time_s`` is
    the host time the loop spent producing batches (see :class:`TrainStats`). ``compile`` runs
    the step through ``torch.compile``. ``epoch_val`` (when given) scores the model after every
    epoch, on every rank, whether or not ``on_epoch`` is given (training resumes in train mode,
    and nothing it does changes what is trained); ``on_epoch`` receives an
    :class:`pebench.runlog.EpochRecord` after every epoch, with that accuracy.

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
        Diverged: when the loss (of the global batch, on every rank alike) is not finite; the
            message names the epoch and the steps of the window it happened in.
        ValueError: a world size larger than ``budget.batch_size``.
    """
    from tqdm.auto import tqdm

    rank, size = world()
    model.to(device).train()
    net = compiled(model if size == 1 else _ddp(model, device), compile)
    if rank > 0:  # dropout / drop-path masks of other ranks must not copy rank 0's
        torch.manual_seed(seed * 1000 + rank)
    n = len(split)
    opt, sched = optimizer_and_schedule(model, budget, lr, weight_decay, n, device)
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    seen, elapsed, data_s, loss_sum, loss_n = 0, 0.0, 0.0, 0.0, 0
    first_s, first_n = 0.0, 0
    bar = tqdm(range(budget.epochs), desc=desc, leave=False, disable=not progress or rank != 0)
    for epoch in bar:
        split.data.set_epoch(epoch)
        order = torch.randperm(n, generator=gen)
        batches_ = _rank_batches(split, order, budget.batch_size, workers, rank, size, device)
        lr_first = sched.get_last_lr()[0]
        t0 = time.perf_counter()
        loss_sum, loss_n, dt_data = _epoch(
            net, opt, sched, params, budget, batches_, device, epoch, size
        )
        sync(device)
        epoch_s = time.perf_counter() - t0
        elapsed += epoch_s
        data_s += dt_data
        seen += loss_n
        if epoch == 0:
            first_s, first_n = epoch_s, loss_n
        bar.set_postfix(loss=f"{loss_sum / loss_n:.3f}")
        val = None
        if epoch_val is not None:  # on every rank, logged or not: evaluation ends in collectives
            val = epoch_val()
            model.train()
        if on_epoch is not None:
            loss = loss_sum / max(1, loss_n)
            on_epoch(EpochRecord(epoch, loss, lr_first, epoch_s, dt_data, val))
    steady_s = elapsed - first_s
    if size > 1:
        elapsed, data_s = _all_reduce(elapsed, "max"), _all_reduce(data_s, "max")
        first_s, steady_s = _all_reduce(first_s, "max"), _all_reduce(steady_s, "max")
    ips = seen / elapsed if elapsed else 0.0
    steady = (seen - first_n) / steady_s if budget.epochs > 1 and steady_s > 0 else math.nan
    return TrainStats(loss_sum / max(1, loss_n), elapsed, ips, data_s, steady, first_s)


def eval_batch_size(budget: Budget, device: torch.device) -> int:
    """The evaluation batch of ``budget`` on ``device`` (:meth:`Budget.eval_batch_size`)."""
    return budget.eval_batch_size(device.type == "cuda")


@dataclass(frozen=True)
class Evaluation:
    """What scoring one split gave: the predicted class of every example, and its speed.

    Attributes:
        pred: predicted class per example, int64 ``(N,)``, in the split's fixed order (the
            prepared split's order: the same index is the same image for every run of a task).
        correct: whether each prediction equals its label, bool ``(N,)``.
        images_per_s: examples (clips for video) per second of evaluation.
    """

    pred: np.ndarray
    correct: np.ndarray
    images_per_s: float

    @property
    def n_correct(self) -> int:
        """Examples predicted correctly."""
        return int(self.correct.sum())

    @property
    def n(self) -> int:
        """Examples scored."""
        return len(self.pred)

    @property
    def top1(self) -> float:
        """Top-1 accuracy (fraction)."""
        return self.n_correct / self.n if self.n else math.nan


def _gather_predictions(pred: torch.Tensor, order: torch.Tensor, n: int) -> torch.Tensor:
    """Every rank's predictions at their split positions (``order``), on every rank."""
    import torch.distributed as dist

    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    full = torch.zeros(n, dtype=torch.int64, device=device)
    full[order.to(device)] = pred.to(device) + 1  # disjoint positions: a sum fills them all
    dist.all_reduce(full, op=dist.ReduceOp.SUM)
    return full.cpu() - 1


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: Split,
    budget: Budget,
    device: torch.device,
    workers: int = 0,
    compile: bool = False,
) -> Evaluation:
    """Predicted class of every example of ``split`` (``model`` in eval mode), and the speed.

    Multi-view splits (video: temporal segments × spatial crops) give items of shape
    ``(views, ...)``; the model sees every view and the **logits are averaged** over views
    before the argmax. Throughput counts examples (clips), not views, and is timed from after
    the first batch when there are several (its warm-up and any compilation are not counted).
    Predictions stay on the device and are read once at the end.

    Under ``torch.distributed`` with world size ``W > 1`` rank ``r`` scores ``order[r::W]``; the
    predictions are gathered (every rank returns all of them, in split order) and the
    throughput is all examples over the slowest rank's time.
    """
    rank, size = world()
    model.to(device).eval()
    net = compiled(model, compile)
    preds: list[torch.Tensor] = []
    order = torch.arange(len(split))[rank::size]
    batch_size = eval_batch_size(budget, device)
    sync(device)
    t0, timed = time.perf_counter(), len(order)
    for i, (x, y) in enumerate(batches(split, order, batch_size, workers, device)):
        with autocast(device, budget):
            if split.views > 1:
                logits = net(x.flatten(0, 1)).float().view(len(y), split.views, -1).mean(1)
            else:
                logits = net(x)
        preds.append(logits.argmax(dim=-1))
        if i == 0 and len(order) > batch_size:  # timed from after the first (warm-up) batch
            sync(device)
            t0, timed = time.perf_counter(), len(order) - len(y)
    pred = torch.cat(preds).cpu() if preds else torch.zeros(0, dtype=torch.int64)
    elapsed = time.perf_counter() - t0
    if size > 1:
        pred, elapsed = _gather_predictions(pred, order, len(split)), _all_reduce(elapsed, "max")
        timed = int(_all_reduce(timed))
    pred_np = pred.numpy().astype(np.int64)
    correct = pred_np == split.labels.numpy()
    return Evaluation(pred_np, correct, timed / elapsed if elapsed else 0.0)
