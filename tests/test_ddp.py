"""Multi-process runs with torch DDP on CPU/gloo: same rows as one process, only rank 0 writes."""

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pebench import results as R
from pebench.backbones import tiny_vit
from pebench.budget import get_budget
from pebench.data import ImageArray, Split
from pebench.datasets import get_task
from pebench.method import prepare
from pebench.methods import build_method
from pebench.run import RunOptions
from pebench.store import RunStore
from pebench.supervise import execute
from pebench.sweep.ddp import (
    launch_command,
    read_spec,
    spec_from_json,
    spec_to_json,
    write_spec,
)
from pebench.sweep.plan import plan_sweep
from pebench.sweep.worker import run_one
from pebench.train import _rank_batches, train

#: LoRA without its input dropout: one process and two ranks then see the same computation (with
#: dropout, each rank draws its own masks, so numbers agree only statistically)
NO_DROPOUT = {"dropout": 0.0}
RUN_TIMEOUT_S = 120


def _spec(tmp_path, method="lora", trial=1):
    sweep = plan_sweep(
        method,
        tasks="demo/shapes",
        budget="demo-smoke",
        weights="random",
        overrides=NO_DROPOUT,
        options=RunOptions(device="cpu", progress=False),
        results_dir=tmp_path / "planned",
    )
    return sweep.search_specs(get_task("demo/shapes"))[trial]


def _ddp(spec, tmp_path, name, **env):
    """Run ``spec`` on 2 ranks as a sweep's worker does; ``(its row, the row files, seconds)``."""
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **env}
    opts = replace(spec.options, nproc=2, env=tuple(sorted(env.items())))
    store = RunStore(tmp_path / name)
    t0 = time.perf_counter()
    row = run_one(replace(spec, options=opts), store, RUN_TIMEOUT_S)
    rows = sorted(store.runs.glob("*.csv")) if store.runs.exists() else []
    return row, rows, time.perf_counter() - t0


# ------------------------------------------------------------------------------ spec JSON --
def test_spec_round_trips_through_json(tmp_path):
    spec = _spec(tmp_path)
    env = (("CUDA_VISIBLE_DEVICES", "0,1"),)
    spec = replace(spec, options=replace(spec.options, env=env, threads=2))
    back = read_spec(write_spec(spec, tmp_path / "spec.json"))
    assert back == spec
    assert spec_to_json(back) == spec_to_json(spec)  # base_row too (compare=False; NaN values)
    assert back.base_row.keys() == spec.base_row.keys()
    assert isinstance(back.overrides, tuple) and back.overrides == (("dropout", 0.0),)
    assert back.options.env == (("CUDA_VISIBLE_DEVICES", "0,1"),) and back.options.threads == 2
    assert back != replace(spec, base_row=_spec(tmp_path, trial=0).base_row)  # another run


def test_bad_spec_json_names_the_bad_keys(tmp_path):
    good = json.loads(spec_to_json(_spec(tmp_path)))
    with pytest.raises(ValueError, match=r"unknown keys \['bogus'\]"):
        spec_from_json(json.dumps(dict(good, bogus=2)))
    with pytest.raises(ValueError, match=r"options has unknown keys \['bogus'\]"):
        spec_from_json(json.dumps(dict(good, options=dict(good["options"], bogus=1))))
    del good["base_row"]
    with pytest.raises(ValueError, match=r"lacks required keys \['base_row'\]"):
        spec_from_json(json.dumps(good))
    with pytest.raises(ValueError, match="JSON object"):
        spec_from_json("[1, 2]")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(ValueError, match="bad.json: run spec is not valid JSON"):
        read_spec(tmp_path / "bad.json")


def test_launch_command():
    cmd = launch_command("s.json", "res", 4)
    assert cmd == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "4",
        "-m",
        "pebench.sweep.ddp",
        "s.json",
        "res",
    ]
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="nproc must be a positive integer"):
            launch_command("s.json", "res", bad)


def test_main_outside_torchrun_says_how_to_start_it(tmp_path):
    spec_path = write_spec(_spec(tmp_path), tmp_path / "s.json")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR")}
    proc = subprocess.run(
        [sys.executable, "-m", "pebench.sweep.ddp", str(spec_path), str(tmp_path / "r")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "start it with torchrun" in proc.stderr
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- batch slices --
class _Images:
    """Stand-in for an ImageArray batch source that records nothing but the indices."""

    views = 1

    def __init__(self, n):
        self.labels = np.arange(n)

    def __getitem__(self, i):
        return torch.full((2,), float(i)), int(i)

    def batch(self, idx, device=None):
        return idx.float()[:, None].expand(-1, 2), idx.clone()


@pytest.mark.parametrize(("n", "batch", "size"), [(9, 4, 2), (10, 4, 3), (64, 32, 2), (5, 5, 5)])
def test_each_rank_gets_its_slice_of_every_global_batch(n, batch, size):
    split = Split(_Images(n), torch.arange(n), "x")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    whole = [order[i : i + batch] for i in range(0, n, batch)]
    per_rank = [list(_rank_batches(split, order, batch, 0, r, size)) for r in range(size)]
    for r, got in enumerate(per_rank):
        assert len(got) == len(whole)  # every rank takes part in every step
        for (x, y, global_n), g in zip(got, whole, strict=True):
            assert global_n == len(g)
            assert y.tolist() == g[r::size].tolist()
            assert x.shape == (len(g[r::size]), 2)
    single = list(_rank_batches(split, order, batch, 0, 0, 1))
    assert [y.tolist() for _, y, _ in single] == [g.tolist() for g in whole]


def test_more_ranks_than_batch_size_is_refused():
    split = Split(_Images(8), torch.arange(8), "x")
    with pytest.raises(ValueError, match="batch size 2 is smaller than the world size 3"):
        next(_rank_batches(split, torch.arange(8), 2, 0, 0, 3))


# -------------------------------------------------------------- train() on uneven batches --
#: 3 ranks, global batches of 4, 4, 2: slices of 2, 1, 1 examples, then 1, 1, 0 (rank 2 empty)
N_UNEVEN, BATCH_UNEVEN, RANKS_UNEVEN = 10, 4, 3


def _uneven_setup(n=N_UNEVEN):
    torch.manual_seed(0)
    model = tiny_vit("cls")
    prepare(model, build_method("lora", NO_DROPOUT), 3)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, n)
    data = ImageArray(images, labels, 32, (0.5,) * 3, (0.5,) * 3)
    split = Split(data, torch.from_numpy(data.labels), "x")
    budget = replace(get_budget("demo-smoke"), batch_size=BATCH_UNEVEN, epochs=2)
    return model, split, budget


def _uneven_rank(rank, init_file, out_file, n=N_UNEVEN, size=RANKS_UNEVEN):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    model, split, budget = _uneven_setup(n)
    stats = train(model, split, budget, 1e-2, 1e-4, 0, torch.device("cpu"))
    if rank == 0:
        torch.save({"state": model.state_dict(), "stats": dataclasses.asdict(stats)}, out_file)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_train_like_one_process_on_uneven_batches(tmp_path):
    import torch.multiprocessing as tmp

    out = tmp_path / "rank0.pt"
    tmp.spawn(_uneven_rank, args=(str(tmp_path / "init"), str(out)), nprocs=RANKS_UNEVEN, join=True)
    model, split, budget = _uneven_setup()
    stats = train(model, split, budget, 1e-2, 1e-4, 0, torch.device("cpu"))
    got = torch.load(out)
    trained = [k for k, p in model.named_parameters() if p.requires_grad]
    assert trained
    # float reduction order leaves ~1e-6 after AdamW; a per-rank mean instead of the W/N-scaled
    # sum moves parameters by ~5e-2 here
    for k in trained:
        assert torch.allclose(got["state"][k], model.state_dict()[k], rtol=0, atol=1e-5), k
    assert got["stats"]["train_loss"] == pytest.approx(stats.train_loss, rel=1e-5)
    # the rank's stats count the global batches: 2 epochs x 9 examples over its time
    ips = got["stats"]["train_images_per_s"]
    assert ips == pytest.approx(2 * N_UNEVEN / got["stats"]["train_time_s"])


# ------------------------------------------------------------------------- whole runs --
@pytest.mark.slow
def test_two_process_run_writes_the_single_process_row_once(tmp_path):
    spec = _spec(tmp_path)
    single = RunStore(tmp_path / "single").record(*execute(spec))
    row, rows, _ = _ddp(spec, tmp_path, "ddp")
    assert [p.stem for p in rows] == [spec.base_row["run_id"]]  # one row
    assert row["run_id"] == R.read_csv(rows[0])[0]["run_id"]
    assert row["status"] == "ok", row["error"]
    assert {k: row[k] for k in R.IDENTITY} == {k: single[k] for k in R.IDENTITY}
    assert row["run_id"] == single["run_id"] == R.run_id(row)
    # equal-sized slices (2 x 16 of every 32-example batch): only the order of float reductions
    # differs (gradient all-reduce, loss summed in float64), far below one test example
    assert row["val_top1"] == single["val_top1"]
    assert row["train_loss"] == pytest.approx(single["train_loss"], rel=1e-4)
    assert row["device"].startswith("ddp 2x cpu:")
    assert math.isfinite(row["train_images_per_s"]) and row["train_images_per_s"] > 0


#: loaded by every rank's interpreter (sitecustomize): rank 1's run raises (no hook in pebench)
CRASH_RANK_1 = """\
import os
import pebench.trainer

_real = pebench.trainer.train_model


def train_model(*args, **kwargs):
    if os.environ.get("RANK") == "1":
        raise RuntimeError("failure injected on rank 1")
    return _real(*args, **kwargs)


pebench.trainer.train_model = train_model
"""


@pytest.mark.slow
def test_a_crash_on_rank_1_gives_a_failure_row_without_hanging(tmp_path):
    spec = _spec(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(CRASH_RANK_1)
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    row, rows, took = _ddp(spec, tmp_path, "crash", PYTHONPATH=path)
    assert took < RUN_TIMEOUT_S
    assert [p.stem for p in rows] == [spec.base_row["run_id"]]
    assert row["status"] == "failed"
    assert row["error"].startswith("rank 1: RuntimeError: failure injected on rank 1")
    assert math.isnan(row["val_top1"])


@pytest.mark.slow
def test_pebench_run_with_two_processes_per_run_gives_the_same_rows(tmp_path, monkeypatch):
    """`pebench run --nproc-per-run 2`: the worker launches torchrun for every run."""
    from pebench.cli import main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    base = [
        "run",
        "--method",
        "lora",
        "--set",
        "dropout=0",
        "--tasks",
        "demo/shapes",
        "--budget",
        "demo-smoke",
        "--seeds",
        "0",
        "--weights",
        "random",
        "--quiet",
        "--threads",
        "1",
    ]
    assert main([*base, "--results", str(tmp_path / "one")]) == 0
    assert main([*base, "--results", str(tmp_path / "two"), "--nproc-per-run", "2"]) == 0
    one = {r["run_id"]: r for r in RunStore(tmp_path / "one").rows()}
    two = {r["run_id"]: r for r in RunStore(tmp_path / "two").rows()}
    assert set(one) == set(two) and len(one) == 3  # 2 search trials + 1 final, same ids
    for rid, r in two.items():
        assert r["status"] == "ok", r["error"]
        assert r["device"].startswith("ddp 2x")
        for col in ("val_top1", "test_top1"):
            assert r[col] == one[rid][col] or (math.isnan(r[col]) and math.isnan(one[rid][col]))
    assert not list((tmp_path / "two" / "runs").glob(".*"))  # no spec or marker left behind


def _pids_mentioning(*texts):
    """Processes whose command line holds every one of ``texts`` (this test's excluded)."""
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if all(t in cmdline for t in texts) and int(proc.name) != os.getpid():
                out.append(int(proc.name))
    return out


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux's")
def test_killing_the_driver_of_a_ddp_run_leaves_no_process_behind(tmp_path):
    """torchrun ran in its own session with no parent watch: after `kill -9` of the driver's
    group it wrote its row anyway, and the resume ran the same run a second time beside it."""
    import signal

    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "pebench.cli", "run", "--method", "linear", "--tasks",
           "demo/shapes", "--budget", "demo-smoke", "--weights", "random", "--seeds", "0",
           "--nproc-per-run", "2", "--device", "cpu", "--quiet",
           "--results", str(results)]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    driver = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    ddp = ("pebench.sweep.ddp", f"{results}/runs/.")  # torchrun and its ranks
    while len(_pids_mentioning(*ddp)) < 3 and time.time() < deadline:
        time.sleep(0.05)  # torchrun and both ranks of a run are up
    assert len(_pids_mentioning(*ddp)) >= 3, "no DDP run started"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    deadline = time.time() + 10
    while _pids_mentioning(str(results)) and time.time() < deadline:
        time.sleep(0.1)
    assert _pids_mentioning(str(results)) == []  # torchrun and its ranks died with the driver
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = RunStore(results).rows()
    assert len(rows) == 3 and {r["status"] for r in rows} == {"ok"}


@pytest.mark.slow
def test_epoch_val_with_two_processes_scores_every_epoch_without_hanging(tmp_path):
    """--epoch-val under DDP: every rank scores the validation split after each epoch (its
    evaluation ends in collectives), so the run neither hangs nor mismatches (issue #23, 3)."""
    spec = _spec(tmp_path)
    spec = replace(spec, options=replace(spec.options, epoch_val=True))
    single_row, single_rec = execute(spec)
    row, rows, took = _ddp(spec, tmp_path, "epochval", PEBENCH_DDP_TIMEOUT_S="30")
    assert took < RUN_TIMEOUT_S
    assert [p.stem for p in rows] == [spec.base_row["run_id"]]
    store = RunStore(tmp_path / "epochval")
    row = store.read(spec.base_row["run_id"])
    assert row["status"] == "ok", row["error"]
    vals = [e["val_top1"] for e in store.load_record(row).epochs]
    assert len(vals) == spec.budget.epochs
    assert vals == [e["val_top1"] for e in single_rec.epochs]  # the same scores as one process
    assert vals[-1] == row["val_top1"]
