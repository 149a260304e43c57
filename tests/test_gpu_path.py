"""The GPU path, read line by line (issue #23): what a CPU can check of it.

CUDA devices are stood in for by a stub tensor, torch's fake tensors or a patched device count;
nothing here needs a GPU.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from pebench import metrics as M
from pebench import train as T
from pebench.backbones import tiny_vit
from pebench.budget import get_budget
from pebench.data import ImageArray
from pebench.datasets import get_task
from pebench.harness import synthetic_split
from pebench.method import Guard, prepare
from pebench.methods import build_method
from pebench.run import RunOptions, RunSpec, device_of
from pebench.store import RunStore
from pebench.supervise import execute
from pebench.sweep import executors as E
from pebench.sweep.engines import options
from pebench.sweep.plan import plan_sweep

NO_DROPOUT = {"dropout": 0.0}


@pytest.fixture
def process_settings():
    """Put back the process-wide torch settings a test's device setup changed."""
    det, warn = (
        torch.are_deterministic_algorithms_enabled(),
        (torch.is_deterministic_algorithms_warn_only_enabled()),
    )
    tf32 = torch.backends.cuda.matmul.allow_tf32
    yield
    torch.use_deterministic_algorithms(det, warn_only=warn)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.set_flush_denormal(False)


def _fake_gpu(monkeypatch, count=1):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def _setup(n=96, epochs=2):
    torch.manual_seed(0)
    model = tiny_vit("cls")
    prepare(model, build_method("lora", NO_DROPOUT), 3)
    split = synthetic_split(model, n, 32, 3)
    budget = replace(get_budget("demo-smoke"), batch_size=8, epochs=epochs, warmup_epochs=0)
    return model, split, budget


def _spec(tmp_path, **options):
    sweep = plan_sweep(
        "lora",
        tasks="demo/shapes",
        budget="demo-smoke",
        weights="random",
        overrides=NO_DROPOUT,
        options=RunOptions(device="cpu", progress=False, **options),
        results_dir=tmp_path / "planned",
    )
    return sweep.search_specs(get_task("demo/shapes"))[0]


# ------------------------------------------------------------- item 5: one CUDA device name --
def test_a_split_copied_to_cuda_0_is_resident_for_a_run_on_cuda(monkeypatch, process_settings):
    """torch.device("cuda:0") != torch.device("cuda"): the run's device carries its index, so
    a split place() copied to the GPU is gathered there, not streamed from the host."""
    _fake_gpu(monkeypatch)
    data = ImageArray(np.zeros((4, 2, 2, 3), np.uint8), np.zeros(4), 2, (0,) * 3, (1,) * 3)
    stub = SimpleNamespace(device=torch.device("cuda:0"))  # what .to("cuda") gives
    data._resident = (stub, stub)
    device = device_of(RunOptions(device="cuda"))
    assert device == torch.device("cuda:0")
    assert device_of(RunOptions(device="auto")) == torch.device("cuda:0")
    assert data.resident_on(device)
    assert data.resident_on(torch.device("cuda"))  # an index-less device is the current one
    assert not data.resident_on(torch.device("cuda:1"))
    assert not data.resident_on(torch.device("cpu"))


# ------------------------------------------------- item 10: one process-settings function --
def _settings_applied() -> bool:
    tiny = torch.tensor([1e-40], dtype=torch.float32)  # subnormal: flushed to 0 when set
    return torch.are_deterministic_algorithms_enabled() and (tiny * 1.0).item() == 0.0


@pytest.mark.parametrize("entry", ["run", "bench", "harness", "estimate"])
def test_runs_and_every_speed_measurement_share_the_process_settings(entry, process_settings):
    """bench, bench --harness and estimate --measure time what runs compute: same settings."""
    from pebench import bench, harness

    torch.use_deterministic_algorithms(False)
    torch.set_flush_denormal(False)
    assert not _settings_applied()
    if entry == "run":
        device_of(RunOptions(device="cpu"))
    elif entry == "bench":
        bench.run_bench(["linear"], steps=1, rounds=1, batch_size=4)
    elif entry == "harness":
        harness.run_harness_bench(["linear"], steps=1, rounds=1, batch_size=4)
    else:
        budget = replace(get_budget("demo-v3"), batch_size=4)
        harness.measure("linear", budget, "pebench_vit_micro", "cpu", 3, steps=2)
    assert _settings_applied()


def test_gpu_runs_drop_the_deterministic_mode(monkeypatch, process_settings):
    """On CUDA deterministic mode NaN-filled allocations and still left flash attention's
    backward nondeterministic: GPU runs go without it (reruns differ at round-off)."""
    _fake_gpu(monkeypatch)
    torch.use_deterministic_algorithms(True, warn_only=True)
    assert device_of(RunOptions(device="cuda")).type == "cuda"
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cuda.matmul.allow_tf32
    device_of(RunOptions(device="cpu"))  # the CPU keeps it: committed CPU rows are computed so
    assert torch.are_deterministic_algorithms_enabled()


# ------------------------------------------------------- item 8: the guard's copies on host --
def test_the_guard_keeps_its_copies_in_host_memory():
    """Copies of the frozen tensors on the GPU would add the backbone's size to the device
    memory of frozen-backbone methods only (0.32 GiB on ViT-B)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    model = nn.Sequential(nn.Linear(4, 4, device="meta"), nn.BatchNorm1d(4, device="meta"))
    with FakeTensorMode(allow_non_fake_inputs=True):  # tensors that say cuda:0, no GPU needed
        model = model.to_empty(device="cuda")
        model[0].weight.requires_grad_(False)
        assert model[0].weight.device.type == "cuda"
        guard = Guard(model)
    assert set(guard.frozen) == {"0.weight"} and len(guard.buffers) == 3
    assert {t.device.type for t in [*guard.frozen.values(), *guard.buffers.values()]} == {"cpu"}


def test_the_guard_still_sees_a_frozen_tensor_changed_in_place():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    model[0].weight.requires_grad_(False)
    guard = Guard(model)
    guard.verify(model, "m")
    assert guard.frozen["0.weight"] is not model[0].weight  # a copy, also on the CPU
    with torch.no_grad():
        model[0].weight[0, 0] += 1
    with pytest.raises(Exception, match=r"changed frozen tensors in place: \['0.weight'\]"):
        guard.verify(model, "m")


# ------------------------------------------------- item 6: steady state and warm-up apart --
class _Clock:
    """A perf_counter that moves only when the model runs: 1000 s for its first call, 1 s after."""

    def __init__(self) -> None:
        self.now, self.calls = 0.0, 0

    def perf_counter(self) -> float:
        return self.now

    def tick(self, *_: object) -> None:
        self.now += 1000.0 if self.calls == 0 else 1.0
        self.calls += 1


def test_throughput_is_reported_steady_and_total_and_the_first_epoch_apart(monkeypatch):
    model, split, budget = _setup()  # 96 examples, batch 8: 12 steps per epoch, 2 epochs
    clock = _Clock()
    monkeypatch.setattr(T, "time", clock)
    model.register_forward_pre_hook(clock.tick)
    stats = T.train(model, split, budget, 1e-3, 1e-4, 0, torch.device("cpu"))
    assert stats.first_epoch_s == 1011.0  # warm-up (and compilation) land in the first epoch
    assert stats.train_time_s == 1023.0
    assert stats.steady_images_per_s == 96 / 12.0  # epoch 1 only
    assert stats.train_images_per_s == 192 / 1023.0  # the total, as before


def test_one_epoch_has_no_steady_state():
    model, split, budget = _setup(n=16, epochs=1)
    stats = T.train(model, split, budget, 1e-3, 1e-4, 0, torch.device("cpu"))
    assert math.isnan(stats.steady_images_per_s) and stats.first_epoch_s == stats.train_time_s


def test_evaluation_is_timed_from_after_its_first_batch(monkeypatch):
    model, split, budget = _setup()
    clock = _Clock()
    monkeypatch.setattr(T, "time", clock)
    model.register_forward_pre_hook(clock.tick)
    scored = T.evaluate(model, split, budget, torch.device("cpu"))
    assert clock.calls == 12
    assert scored.images_per_s == (96 - 8) / 11.0  # the first batch's 1000 s are not counted


# ------------------------------------------- item 3: epoch validation on every rank alike --
def test_epoch_val_runs_after_every_epoch_whether_or_not_anything_logs():
    """Under DDP evaluation ends in collectives: a rank without a log must score too."""
    model, split, budget = _setup(n=16, epochs=3)
    calls = []
    T.train(
        model,
        split,
        budget,
        1e-3,
        1e-4,
        0,
        torch.device("cpu"),
        epoch_val=lambda: calls.append(1) or 0.5,
    )
    assert len(calls) == 3


# ----------------------------------------------------- items 7, 12: what a row records --
def test_ddp_mfu_divides_by_every_gpus_peak_and_uses_the_steady_rate(monkeypatch, tmp_path):
    """A DDP run's img/s are global: its MFU is over world-size GPUs, not one."""
    from pebench import trainer

    spec = _spec(tmp_path)
    fake = T.TrainStats(0.5, 2.0, 100.0, 0.1, steady_images_per_s=120.0, first_epoch_s=1.2)
    monkeypatch.setattr(trainer, "train", lambda *a, **k: fake)
    monkeypatch.setattr(trainer, "world", lambda: (0, 2))
    monkeypatch.setattr(M, "peak_flops", lambda name: 1e12)
    row, _ = trainer.train_model(spec)  # the training stage, in this process
    assert row["mfu"] == pytest.approx(row["train_flops_per_image"] * 120.0 / (2 * 1e12))
    assert row["train_images_per_s"] == 100.0 and row["train_images_per_s_steady"] == 120.0
    assert row["first_epoch_s"] == 1.2


def test_mfu_counts_every_device_of_a_run():
    assert M.mfu(1e9, 989.0, "cuda:NVIDIA H200", devices=2) == pytest.approx(0.5e-3)


def test_a_row_says_how_its_speed_was_measured(tmp_path):
    spec = _spec(tmp_path, device_runs=3)
    row, record = execute(spec)
    row = RunStore(tmp_path / "out").record(row, record)  # the schema takes the new columns
    assert row["data_resident"] == "none"  # the CPU reads the host array, nothing copied
    assert row["device_runs"] == 3
    epochs = get_budget("demo-smoke").epochs
    assert 0 < row["first_epoch_s"] < row["train_time_s"]
    steady_s = row["train_time_s"] - row["first_epoch_s"]
    n = 64  # demo-smoke's subset
    assert row["train_images_per_s_steady"] == pytest.approx((epochs - 1) * n / steady_s)


# --------------------------------------------- items 2, 9: GPUs a local run is pinned to --
def _slots(ex):
    try:
        return [ex._slots.get_nowait() for _ in range(ex.max_parallel)]
    finally:
        ex.close()


def test_a_ddp_run_is_pinned_to_as_many_gpus_as_it_has_processes(monkeypatch, tmp_path):
    """Rank r calls set_device(r): with one GPU visible that was 'invalid device ordinal'."""
    monkeypatch.setattr(E, "visible_gpus", lambda device="auto": ["0", "1", "2", "5", "7"])
    ex = E.LocalExecutor(device="auto", nproc_per_run=2)
    seen = []
    monkeypatch.setattr(E, "work", lambda spec, *a: seen.append(spec.options) or {})
    spec = RunSpec({"run_id": "r"}, options=RunOptions(nproc=2))
    ex._run(spec, tmp_path, 10.0)
    assert dict(seen[0].env)["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert ex.max_parallel == 2 and sorted(_slots(ex)) == ["0,1", "2,5"]  # GPU 7 stays idle


def test_more_processes_per_run_than_gpus_is_refused_before_anything_runs(monkeypatch):
    monkeypatch.setattr(E, "visible_gpus", lambda device="auto": ["0", "1"])
    with pytest.raises(E.ExecutorError, match=r"--nproc-per-run 4 needs 4 GPUs per run .* 2 are"):
        options(nproc_per_run=4)
    with pytest.raises(E.ExecutorError, match=r"--device cuda:1 names one GPU"):
        options(nproc_per_run=2, device="cuda:1")
    options(nproc_per_run=2)
    options(nproc_per_run=4, device="cpu")  # gloo: no GPU per rank


def test_the_cli_refuses_more_processes_than_gpus_in_one_line(monkeypatch, capsys, tmp_path):
    from pebench.cli import main

    monkeypatch.setattr(E, "visible_gpus", lambda device="auto": ["0"])
    code = main(["run", "--method", "lora", "--tasks", "demo/shapes", "--nproc-per-run", "2",
                 "--results", str(tmp_path / "r")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "pebench: error: --nproc-per-run 2 needs 2 GPUs per run (nccl: one per process), but 1 "
        "are visible (0); use at most 1, or --device cpu (gloo)"
    ]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("per_device", [1, 3])
def test_a_named_gpu_runs_runs_per_device_runs_at_once(per_device, monkeypatch, tmp_path):
    """--device cuda:N ran up to 8 runs at once on that GPU, whatever --runs-per-device said."""
    ex = E.LocalExecutor(device="cuda:1", runs_per_device=per_device)
    seen = []
    monkeypatch.setattr(E, "work", lambda spec, *a: seen.append(spec.options) or {})
    ex._run(RunSpec({"run_id": "r"}, options=RunOptions(device="cuda:1")), tmp_path, 10.0)
    assert "CUDA_VISIBLE_DEVICES" not in dict(seen[0].env)  # the device names the GPU
    assert seen[0].device_runs == per_device
    assert ex.max_parallel == per_device and _slots(ex) == [None] * per_device


def test_each_run_records_how_many_runs_share_its_device(monkeypatch, tmp_path):
    monkeypatch.setattr(
        E, "visible_gpus", lambda device="auto": [] if device == "cpu" else ["0", "1"]
    )
    ex = E.LocalExecutor(device="auto", runs_per_device=2)
    seen = []
    monkeypatch.setattr(E, "work", lambda spec, *a: seen.append(spec.options) or {})
    ex._run(RunSpec({"run_id": "r"}), tmp_path, 10.0)
    ex.close()
    assert ex.max_parallel == 4 and seen[0].device_runs == 2
    cpu = E.LocalExecutor(device="cpu", max_parallel=2)
    cpu._run(RunSpec({"run_id": "r"}), tmp_path, 10.0)
    cpu.close()
    assert seen[1].device_runs == 2 and "CUDA_VISIBLE_DEVICES" not in dict(seen[1].env)


# ------------------------------------------------------------------ item 13: the peak table --
def test_an_l40_is_not_taken_for_an_l4():
    assert M.peak_flops("cuda:NVIDIA L40") == 181e12
    assert M.peak_flops("cuda:NVIDIA L4") == 121e12
    assert M.peak_flops("cuda:NVIDIA L40S") == 362e12
    assert M.peak_flops("cuda:NVIDIA GH200 480GB") == 989e12
    assert M.peak_flops("cuda:NVIDIA H100 NVL") == 835e12


# -------------------------------------------------------------- item 11: estimate --measure --
def test_a_measured_estimate_adds_the_fixed_cost_of_every_run():
    from pebench.estimate import estimate

    budget = get_budget("demo-v3")
    e = estimate("linear", [get_task("demo/shapes")], budget)
    assert e.runs == len(budget.trials()) + len(budget.seeds)  # 7 trials + 3 seeds
    base = e.measured_hours(100.0, 400.0)
    assert e.measured_hours(100.0, 400.0, 30.0) == pytest.approx(base + 10 * 30.0 / 3600)


def test_gpu_check_script_parses():
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)


# ----------------------------------------------- item 4: the CLI on a machine without scipy --
def test_without_scipy_every_command_but_compare_still_parses(monkeypatch, capsys):
    """gpu_check.sh runs on a bare CUDA torch + timm + pandas + matplotlib: building the parser
    imported scipy (compare's help), so no command could run there."""
    import sys

    from pebench.cli import build_parser, main

    monkeypatch.setitem(sys.modules, "scipy", None)  # `import scipy` raises ImportError
    for name in [
        m for m in sys.modules if m.startswith(("pebench.report", "pebench.commands.compare"))
    ]:
        monkeypatch.delitem(sys.modules, name)
    args = build_parser().parse_args(["bench", "--harness", "--device", "cpu"])
    assert args.harness and args.device == "cpu"
    assert main(["compare", "lora", "linear"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pebench: error: pebench compare needs scipy")
