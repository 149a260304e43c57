"""What a run reports while it runs: per-run log, epoch records, trackers, one line per run,
and what a rerun of the same command says and does."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys

import pytest

from pebench.cli import main
from pebench.store import RunStore
from tests.budgets import budget_toml

BUDGET = budget_toml(
    epochs=3, warmup_epochs=1, lr_grid=[1e-3, 3e-3], description="run log test budget"
)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One sweep (2 trials, 1 final) with both trackers and per-epoch validation."""
    tmp = tmp_path_factory.mktemp("runlog")
    (tmp / "b.toml").write_text(BUDGET)
    cmd = ["run", "--method", "lora", "--tasks", "demo/shapes", "--budget", str(tmp / "b.toml"),
           "--results", str(tmp / "r"), "--quiet", "--max-parallel", "1"]  # fmt: skip
    code = main([*cmd, "--log-to", "tensorboard,wandb", "--epoch-val"])
    return tmp, cmd, code


def test_every_run_writes_its_log_and_epoch_records(swept):
    tmp, _, code = swept
    assert code == 0
    rows = RunStore(tmp / "r").rows()
    assert len(rows) == 3
    for row in rows:
        log = tmp / "r" / "logs" / f"{row['run_id']}.log"
        assert row["log_path"] == str(log)
        text = log.read_text()
        assert text.count(" epoch ") == 3 and "done: ok" in text
        with open(log.with_suffix("").with_suffix(".epochs.csv")) as f:
            epochs = list(csv.DictReader(f))
        assert [int(e["epoch"]) for e in epochs] == [0, 1, 2]
        # warmup then cosine: the first step's lr of each epoch
        assert float(epochs[0]["lr"]) == pytest.approx(row["lr"] / 2)  # warmup step 1 of 2
        assert float(epochs[1]["lr"]) == pytest.approx(row["lr"])
        assert float(epochs[-1]["train_loss"]) == pytest.approx(row["train_loss"])
        vals = [e["val_top1"] for e in epochs]
        if row["phase"] == "search":  # scored each epoch; the last is the row's
            assert float(vals[-1]) == pytest.approx(row["val_top1"])
        else:  # a final run never scores its test split early
            assert vals == ["", "", ""]
    assert not any(p.suffix == ".csv" for p in (tmp / "r" / "runs").glob("*.epochs*"))


def test_epoch_validation_changes_nothing_that_is_trained(swept, tmp_path):
    tmp, cmd, _ = swept
    code = main([a if a != str(tmp / "r") else str(tmp_path / "plain") for a in cmd])
    assert code == 0
    logged = {r["run_id"]: r for r in RunStore(tmp / "r").rows()}
    plain = {r["run_id"]: r for r in RunStore(tmp_path / "plain").rows()}
    assert logged.keys() == plain.keys()
    for rid, row in plain.items():
        assert row["train_loss"] == logged[rid]["train_loss"]
        assert row["val_top1"] == logged[rid]["val_top1"] or row["phase"] == "final"


def test_trackers_receive_the_epoch_records(swept):
    tmp, _, _ = swept
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = RunStore(tmp / "r").rows()
    row = next(r for r in rows if r["phase"] == "search")
    acc = EventAccumulator(str(tmp / "r" / "tensorboard" / row["run_id"]))
    acc.Reload()
    losses = [e.value for e in acc.Scalars("train_loss")]
    assert len(losses) == 3 and losses[-1] == pytest.approx(row["train_loss"], rel=1e-6)
    offline = list((tmp / "r" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 3  # one offline W&B run per run, nothing uploaded


def test_unknown_or_missing_tracker_is_one_line(capsys, tmp_path):
    code = main(["run", "--method", "lora", "--results", str(tmp_path), "--log-to", "mlflow"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == (
        "pebench: error: --log-to 'mlflow' unknown; allowed: tensorboard, wandb"
    )
    assert not any(tmp_path.iterdir())


def test_a_rerun_says_what_it_reuses_and_rerun_sets_rows_aside(swept, capsys):
    tmp, cmd, _ = swept
    before = {p.name: p.read_bytes() for p in (tmp / "r" / "runs").glob("*.csv")}
    assert main(cmd) == 0
    err = capsys.readouterr().err
    assert "3 of the grid's 3 runs are already recorded" in err and "--rerun" in err
    assert "[1/3]" not in err  # nothing ran
    assert main([*cmd, "--rerun"]) == 0
    err = capsys.readouterr().err
    assert "--rerun: 3 recorded runs of this grid moved to" in err
    assert err.count("] lora demo/shapes") == 3  # one progress line per run
    (aside,) = (tmp / "r" / "runs" / "replaced").iterdir()
    assert {p.name: p.read_bytes() for p in aside.glob("*.csv")} == before  # nothing lost
    assert len(RunStore(tmp / "r").rows()) == 3


def test_a_fully_recorded_rerun_imports_no_torch_and_starts_no_process(swept):
    """#25: a rerun of recorded runs answers from the rows: the method config comes from the
    catalog, the weights tag from hashing the file, the device from the machine's GPU files,
    and no run process (its forkserver imports torch) is started for nothing to run."""
    tmp, cmd, _ = swept
    code = (
        "import sys; from multiprocessing import forkserver; from pebench.cli import main;"
        f"rc = main({cmd!r});"
        "heavy = [m for m in ('torch', 'timm', 'torchvision', 'peft') if m in sys.modules];"
        "print('RESULT', rc, heavy, forkserver._forkserver._forkserver_pid)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "RESULT 0 [] None"
    assert "3 of the grid's 3 runs are already recorded" in out.stderr


def test_a_link_planted_at_a_log_path_is_not_followed(tmp_path):
    """A shared results folder: another user plants ``logs/<run_id>.log`` (run ids are public)
    and ``tensorboard/<run_id>`` as links to their own files; the run writes fresh files of its
    own and the link targets stay as they were."""
    from pebench.runlog import EpochRecord, RunLog

    store = RunStore(tmp_path / "r")
    paths = store.log_paths("0123456789abcdef")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    paths.log.parent.mkdir(parents=True)
    paths.log.symlink_to(victim)
    paths.epochs.symlink_to(victim)
    paths.tensorboard.parent.mkdir(parents=True)
    paths.tensorboard.symlink_to(elsewhere, target_is_directory=True)
    log = RunLog(paths, {"run_id": "0123456789abcdef", "phase": "search"}, ("tensorboard",))
    log.epoch(EpochRecord(0, 1.5, 0.1, 1.0, 0.1))
    log.close({"phase": "search", "status": "ok", "val_top1": 0.5})
    assert victim.read_text() == "keep me" and not any(elsewhere.iterdir())
    assert not paths.log.is_symlink() and "epoch 0: train_loss=1.5000" in paths.log.read_text()
    assert not paths.epochs.is_symlink() and not paths.tensorboard.is_symlink()
    assert any(paths.tensorboard.iterdir())  # the events went to a folder of the run's own


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed here"
)
def test_tensorboard_logging_never_imports_tensorflow(tmp_path):
    """With TensorFlow installed (the ``tfds`` extra), ``torch.utils.tensorboard`` would import
    it in the driver (``--log-to`` is checked there) and in every run process (about 7 s each);
    TensorBoard's TF-free stub writes the same events."""
    code = f"""
import sys
from pathlib import Path
from pebench.runlog import EpochRecord, RunLog, check_trackers
from pebench.store import RunStore
check_trackers(("tensorboard",))
paths = RunStore(Path({str(tmp_path)!r})).log_paths("0123456789abcdef")
log = RunLog(paths, {{"run_id": "0123456789abcdef", "phase": "search"}}, ("tensorboard",))
for epoch, loss in enumerate((1.5, 0.75)):
    log.epoch(EpochRecord(epoch, loss, 0.1, 1.0, 0.1, 0.5))
log.close({{"phase": "search", "status": "ok", "val_top1": 0.5}})
print("tensorflow" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard" / "0123456789abcdef"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train_loss")] == [(0, 1.5), (1, 0.75)]
    assert [e.value for e in acc.Scalars("val_top1")] == [0.5, 0.5]
