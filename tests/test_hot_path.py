"""The GPU-shaped hot path, checked on the CPU: same batches, no per-step host sync, the harness
does exactly the bare loop's work, and the new row measurements."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from pebench import train as T
from pebench.backbones import tiny_vit
from pebench.budget import get_budget
from pebench.data import ImageArray, Split, batches, place
from pebench.harness import (
    bare_train,
    harness_train,
    ready_batches,
    summarise,
    synthetic_split,
    to_markdown,
)
from pebench.method import prepare
from pebench.methods import build_method
from pebench.metrics import mfu, peak_flops

NO_DROPOUT = {"dropout": 0.0}


def _host_reference(images, labels, idx, size, mean, std):
    """The converter as it was: everything on the host, before any transfer."""
    x = torch.from_numpy(np.ascontiguousarray(images[idx.numpy()])).permute(0, 3, 1, 2)
    x = x.float().div_(255)
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(
            x, size=(size, size), mode="bicubic", align_corners=False
        ).clamp_(0, 1)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return x.sub_(m).div_(s), torch.from_numpy(np.asarray(labels)[idx.numpy()])


@pytest.mark.parametrize("size", [16, 24])
def test_device_side_conversion_is_bit_identical_to_the_host_converter(size):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, 40)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    data = ImageArray(images, labels, size, mean, std)
    split = Split(data, torch.from_numpy(data.labels), "x")
    order = torch.randperm(40, generator=torch.Generator().manual_seed(3))
    got = list(batches(split, order, 16, device=torch.device("cpu")))
    assert [len(y) for _, y in got] == [16, 16, 8]
    for i, (x, y) in enumerate(got):
        want_x, want_y = _host_reference(
            images, labels, order[i * 16 : i * 16 + 16], size, mean, std
        )
        assert torch.equal(x, want_x) and torch.equal(y, want_y)  # bit for bit


def test_the_next_batch_is_gathered_before_this_one_is_used():
    """A streamed split is fetched one batch ahead (on CUDA: its copy overlaps this step)."""
    gathered = []

    class Counting(ImageArray):
        def gather(self, idx, device=None):
            gathered.append(int(idx[0]))
            return super().gather(idx, device)

    images = np.arange(10 * 4 * 4 * 3, dtype=np.int64).astype(np.uint8).reshape(10, 4, 4, 3)
    data = Counting(images, np.arange(10), 4, (0,) * 3, (1,) * 3)
    split = Split(data, torch.from_numpy(data.labels), "x")
    order = torch.tensor([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    seen = []
    for x, y in batches(split, order, 4, device=torch.device("cpu")):
        seen.append((int(y[0]), list(gathered)))
        assert torch.equal(x, data.batch(order[len(seen) * 4 - 4 : len(seen) * 4])[0])
        gathered.pop()  # the check's own gather
    # batch k is in hand while batch k+1 was already gathered (the last one has none after it)
    assert seen == [(9, [9, 5]), (5, [9, 5, 1]), (1, [9, 5, 1])]


def test_placing_on_the_cpu_keeps_the_host_array_and_copies_nothing():
    images = np.zeros((8, 4, 4, 3), dtype=np.uint8)
    data = ImageArray(images, np.zeros(8), 4, (0,) * 3, (1,) * 3)
    split = Split(data, torch.from_numpy(data.labels), "x")
    assert place([split], torch.device("cpu"), 0.5) == [False]
    assert data._resident is None and data.nbytes == images.nbytes


def _setup(n=96, seed=0):
    torch.manual_seed(0)
    model = tiny_vit("cls")
    prepare(model, build_method("lora", NO_DROPOUT), 3)
    split = synthetic_split(model, n, 32, 3, seed=seed)
    budget = replace(get_budget("demo-smoke"), batch_size=8, epochs=2, warmup_epochs=1)
    return model, split, budget


def test_the_loss_is_read_on_the_host_once_per_window_not_per_step(monkeypatch):
    model, split, budget = _setup()
    reads = []
    item = torch.Tensor.item

    def counting(self):
        # the loss, however it is kept (the CPU optimizer also reads its float32 step counts)
        if self.grad_fn is not None or self.dtype == torch.float64:
            reads.append(self.shape)
        return item(self)

    monkeypatch.setattr(torch.Tensor, "item", counting)
    T.train(model, split, budget, 1e-3, 1e-4, 0, torch.device("cpu"))
    steps = budget.epochs * math.ceil(len(split) / budget.batch_size)  # 24 steps
    per_epoch = math.ceil(steps / budget.epochs / T.CHECK_EVERY) + 1
    assert steps == 24 and len(reads) <= budget.epochs * per_epoch  # old loop: one per step
    assert len(reads) < steps / 4


def test_deferred_checks_give_the_loss_reading_every_step_gave(monkeypatch):
    """The float64 running sum is read in windows; the mean is the one per-step reading gave."""
    model, split, budget = _setup()
    stats = T.train(model, split, budget, 1e-3, 1e-4, 0, torch.device("cpu"))
    monkeypatch.setattr(T, "CHECK_EVERY", 1)  # read and check after every step
    model2, split2, _ = _setup()
    stats2 = T.train(model2, split2, budget, 1e-3, 1e-4, 0, torch.device("cpu"))
    assert stats.train_loss == stats2.train_loss  # bit-identical
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_divergence_is_named_by_the_window_it_happened_in(monkeypatch):
    model, split, budget = _setup()
    monkeypatch.setattr(T, "CHECK_EVERY", 5)
    calls = []
    real = T._loss

    def poisoned(net, x, y, global_n, size):
        loss, total = real(net, x, y, global_n, size)
        calls.append(1)
        if len(calls) == 7:  # step 6 of epoch 0
            total = total * float("nan")
        return loss, total

    monkeypatch.setattr(T, "_loss", poisoned)
    with pytest.raises(T.Diverged, match=r"loss became nan at epoch 0, steps 5-9"):
        T.train(model, split, budget, 1e-3, 1e-4, 0, torch.device("cpu"))
    assert len(calls) == 10  # stopped at the window's end, not at the end of the epoch


def test_data_time_is_measured_and_part_of_the_epoch_time():
    model, split, budget = _setup()
    stats = T.train(model, split, budget, 1e-3, 1e-4, 0, torch.device("cpu"))
    assert 0 < stats.data_time_s < stats.train_time_s
    assert stats.train_images_per_s == pytest.approx(
        budget.epochs * len(split) / stats.train_time_s
    )


def test_the_bare_loop_does_exactly_the_harness_work():
    """Same init, order, optimizer, schedule and clipping: the same parameters afterwards."""
    model, split, budget = _setup()
    budget = replace(budget, epochs=1, warmup_epochs=0)
    bare = copy.deepcopy(model)
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))
    xs, ys = ready_batches(split, order, budget.batch_size, torch.device("cpu"))
    assert harness_train(model, split, budget, torch.device("cpu")) > 0
    assert bare_train(bare, xs, ys, budget, torch.device("cpu")) > 0
    changed = 0
    for (name, a), b in zip(model.named_parameters(), bare.parameters(), strict=True):
        assert torch.equal(a, b), name
        changed += a.requires_grad
    assert changed > 0


def test_ratio_summary_flags_a_difference_inside_the_spread():
    near = summarise([100, 104, 96, 101, 99], [100, 100, 100, 100, 100])
    assert near.median == pytest.approx(1.0) and not near.distinguishable
    slow = summarise([80, 81, 79, 80, 80], [100, 100, 100, 100, 100])
    assert slow.median == pytest.approx(0.8) and slow.distinguishable
    assert slow.q1 == pytest.approx(0.8) and slow.q3 == pytest.approx(0.8)
    from pebench.harness import HarnessRow

    text = to_markdown([HarnessRow("lora", near, slow, None)])
    assert "| lora | 100 / 100 | 1.00 [0.99–1.01] ~ | 0.80 [0.80–0.80] | — |" in text
    assert text.count("warning:") == 1 and "lora train: spread 0.02" in text


def test_mfu_uses_the_device_table_and_is_empty_elsewhere():
    assert peak_flops("cuda:NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("cuda:NVIDIA H100 PCIe") == 756e12
    assert peak_flops("cuda:NVIDIA H200") == 989e12
    assert peak_flops("cuda:NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("cpu:x86_64x2threads") is None
    assert mfu(1e9, 989.0, "cuda:NVIDIA H200") == pytest.approx(1e-3)
    assert math.isnan(mfu(1e9, 500.0, "cpu:x86_64x2threads"))
    assert math.isnan(mfu(1e9, 500.0, "cuda:Some Future GPU"))


MEMORY_PROBE = """
import torch
from pebench.metrics import MemoryMeter

meter = MemoryMeter(torch.device("cpu"))
big = torch.ones(256 * 2**20 // 4)  # 256 MiB held before the start: not counted
meter.start()
at_start, kind = meter.peak()
extra = torch.ones(192 * 2**20 // 4)  # 192 MiB allocated after the start: counted
extra.add_(1)
after, _ = meter.peak()
print(kind, at_start, after)
"""


def test_cpu_memory_is_the_training_state_above_what_was_loaded():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, check=True
    ).stdout.split()
    kind, at_start, after = out[0], float(out[1]), float(out[2])
    if kind != "cpu_state":
        pytest.skip("peak RSS cannot be reset here (/proc/self/clear_refs)")
    mib = 2**20
    assert at_start < 16 * mib  # what was loaded before the start is not counted
    assert 180 * mib < after < 260 * mib  # what came after is


# ------------------------------------------------------------------ several runs per device --
def test_runs_per_device_shares_each_gpu_between_that_many_runs(monkeypatch):
    from pebench.sweep import executors as E

    monkeypatch.setattr(E, "visible_gpus", lambda device="auto": ["0", "3"])
    ex = E.LocalExecutor(device="auto", runs_per_device=3)
    try:
        slots = [ex._slots.get_nowait() for _ in range(ex.max_parallel)]
    finally:
        ex.close()
    assert ex.max_parallel == 6 and sorted(slots) == ["0", "0", "0", "3", "3", "3"]


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"runs_per_device": 0}, "--runs-per-device must be >= 1, got 0"),
        ({"runs_per_device": 2, "kind": "slurm"}, "applies to --executor local only"),
        ({"runs_per_device": 2, "max_parallel": 4}, "do not combine it with --max-parallel"),
    ],
)
def test_bad_runs_per_device_is_refused_before_anything_runs(opts, message):
    from pebench.sweep.engines import options
    from pebench.sweep.executors import ExecutorError

    with pytest.raises(ExecutorError, match=message):
        options(**opts)


def test_runs_per_device_divides_the_resident_data_share():
    from pebench.cli import build_parser
    from pebench.commands._args import run_options

    args = build_parser().parse_args(["run", "--method", "lora", "--runs-per-device", "4"])
    assert run_options(args).device_share == pytest.approx(0.125)
    args = build_parser().parse_args(["run", "--method", "lora", "--compile"])
    opts = run_options(args)
    assert opts.device_share == 0.5 and opts.compile


# ------------------------------------------------------------- estimate from a measurement --
def test_estimate_takes_its_throughput_from_a_measured_run(capsys):
    from pebench.cli import main

    assert main(["estimate", "--method", "linear", "--tasks", "demo/shapes", "--measure", "cpu",
                 "--json"]) == 0  # fmt: skip
    import json

    (row,) = json.loads(capsys.readouterr().out)
    assert row["measured_on"] == "cpu" and row["measured_train_images_per_s"] > 0
    assert row["runs"] == 7 and row["measured_run_overhead_s"] > 0  # 4 trials + 3 seeds (demo-v4)
    want = (
        row["train_images"] / row["measured_train_images_per_s"]
        + row["eval_images"] / row["measured_eval_images_per_s"]
        + row["runs"] * row["measured_run_overhead_s"]
    ) / 3600
    assert row["hours"] == pytest.approx(want)
    implied = row["train_step_gflops"] * 1e9 * row["measured_train_images_per_s"] / 1e12
    assert row["tflops"] == pytest.approx(implied, rel=1e-3)
