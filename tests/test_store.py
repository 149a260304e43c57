"""The run store: a row and its record are one unit, on disk and when read back.

Attacks on the pair: a record without its row (a writer killed between the two writes), a row
whose record is missing, edited, swapped or hostile, and a retirement interrupted between moving
the row and moving its record.
"""

import json
import os
from pathlib import Path

import pytest
from store_rows import RID, make_record, make_row

from pebench import fsio
from pebench import record as REC
from pebench import results as R
from pebench.store import RunStore, read_row_file


def test_record_writes_the_pair_and_reads_it_back(tmp_path):
    store = RunStore(tmp_path)
    row = store.record(make_row(), make_record())
    assert (row["n_test"], row["n_test_correct"]) == (4, 3)
    assert row["record_sha256"] == REC.sha256(store.record_path(RID).read_bytes())
    assert store.read(RID) == row and store.finished(RID) == row
    rec = store.load_record(row)
    assert rec.pred == (0, 1, 2, 1) and rec.correct == (True, True, False, True)
    assert rec.epochs[0]["train_loss"] == 1.5 and rec.split == "test"


def test_a_score_that_is_not_its_counts_is_refused_before_anything_is_written(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(R.ResultsError, match=r"test_top1=0.5 is not 3/4 correct"):
        store.record(make_row(test_top1=0.5), make_record())
    assert not store.runs.exists() or not any(store.runs.iterdir())


@pytest.mark.parametrize(
    ("damage", "expect"),
    [
        (lambda p: p.unlink(), "its record .* is missing"),
        (lambda p: p.write_bytes(p.read_bytes().replace(b"[0,1", b"[1,1")), "is not the one"),
        (lambda p: p.write_bytes(b""), "is not the one the row names"),
    ],
    ids=["missing", "edited", "emptied"],
)  # fmt: skip
def test_a_row_whose_record_is_not_its_own_is_refused_in_one_line(tmp_path, damage, expect):
    store = RunStore(tmp_path)
    store.record(make_row(), make_record())
    damage(store.record_path(RID))
    with pytest.raises(R.ResultsError, match=expect) as info:
        store.read(RID)
    assert "\n" not in str(info.value) and RID in str(info.value)
    assert store.finished(RID) is None  # a broken pair is redone, never reused
    skipped: list[str] = []
    assert store.rows(skipped) == [] and len(skipped) == 1


def test_a_record_swapped_in_from_another_run_is_refused(tmp_path):
    """Even with its hash put in the row, another run's record does not pass as this one's."""
    store = RunStore(tmp_path)
    other = "fedcba9876543210"
    store.record(make_row(run_id=other), make_record(rid=other))
    row = store.record(make_row(), make_record())
    data = store.record_path(other).read_bytes()
    store.record_path(RID).write_bytes(data)
    text = store.row_path(RID).read_text().replace(row["record_sha256"], REC.sha256(data))
    store.row_path(RID).write_text(text)
    forged = store.read(RID)  # the hash matches now ...
    with pytest.raises(REC.RecordError, match=f"belongs to run '{other}'"):
        store.load_record(forged)  # ... the content does not


def _body(**over) -> bytes:
    """A record's JSON with ``over`` replacing fields of a valid two-image test record."""
    body = {"format": 1, "run_id": RID, "split": "test", "n": 2, "pred": [0, 1], "correct": "10"}
    return json.dumps({**body, "epochs": [], **over}).encode()


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[" * 100_000,
        _body(pred=[0, "x"]),
        _body(n=3),
        _body(correct="1x"),
        _body(split="train", n=1, pred=[0], correct="1"),
    ],
    ids=["text", "deep", "string-class", "short", "bad-flag", "train-split"],
)
def test_hostile_records_are_refused_as_data(tmp_path, body):
    with pytest.raises(REC.RecordError) as info:
        REC.parse(body, "hostile.json")
    assert "hostile.json" in str(info.value) and "\n" not in str(info.value)


def test_a_record_too_large_is_refused_unread(tmp_path):
    with pytest.raises(REC.RecordError, match="more than a record may hold"):
        REC.parse(b" " * (REC.MAX_BYTES + 1), "big.json")


def test_tidy_removes_a_record_whose_writer_died_before_the_row(tmp_path):
    """The kill window between the two writes: a record with no row and no live worker."""
    store = RunStore(tmp_path)
    store.record(make_row(), make_record())
    store.row_path(RID).unlink()  # as if killed after the record, before the row
    assert store.tidy() == [store.record_path(RID)]
    assert not store.record_path(RID).exists()


def test_tidy_keeps_the_record_of_a_run_in_progress(tmp_path):
    store = RunStore(tmp_path)
    assert store.claim(make_row(), 60.0) is None  # this process holds the run
    fsio.atomic_write_bytes(store.record_path(RID), make_record().to_bytes())
    assert store.tidy() == [] and store.record_path(RID).exists()


@pytest.mark.parametrize("where", ["retire", "set_aside"])
def test_tidy_completes_a_move_killed_between_row_and_record(tmp_path, where):
    store = RunStore(tmp_path)
    store.record(make_row(), make_record())
    data = store.record_path(RID).read_bytes()
    (moved,) = getattr(store, where)([RID])
    assert (moved.parent / store.record_path(RID).name).read_bytes() == data  # moved together
    # now interrupt it: the row went, the record stayed behind
    os.replace(moved.parent / store.record_path(RID).name, store.record_path(RID))
    assert store.tidy() == [moved.parent / store.record_path(RID).name]
    assert read_row_file(moved)["run_id"] == RID  # the pair is whole again where it went
    assert not store.record_path(RID).exists()


def test_a_kept_state_goes_where_its_row_goes_and_an_orphan_is_tidied(tmp_path):
    """--keep-state: the state is written before the row; it moves, is discarded and is tidied
    with it (a kill between state and row leaves an orphan no reader sees)."""
    store = RunStore(tmp_path)
    store.keep_state(RID, b"state")
    store.record(make_row(), make_record())
    assert store.tidy() == [] and store.state_path(RID).read_bytes() == b"state"
    (moved,) = store.retire([RID])
    assert (moved.parent / store.state_path(RID).name).read_bytes() == b"state"
    store.keep_state(RID, b"orphan")  # a rerun killed after its state, before its row
    assert store.tidy() == [store.state_path(RID)] and not store.state_path(RID).exists()
    store.keep_state(RID, b"again")
    store.discard(RID)  # an unfinished run about to be redone
    assert not store.state_path(RID).exists()


def test_tidy_removes_the_folder_of_a_ddp_run_killed_while_training(tmp_path):
    store = RunStore(tmp_path)
    folder = store.ddp_dir(RID)
    folder.mkdir(parents=True)
    (folder / "state.safetensors").write_bytes(b"x")
    assert store.claim(make_row(), 60.0) is None  # while its run is held it stays
    assert store.tidy() == [] and folder.is_dir()
    store.release(RID)
    assert store.tidy() == [folder] and not folder.exists()


def test_a_failure_row_never_claims_a_record(tmp_path):
    store = RunStore(tmp_path)
    row = store.record(make_row(status="failed", test_top1=float("nan"), record_sha256="ab" * 32))
    assert row["record_sha256"] == "" and not store.record_path(RID).exists()


def test_old_rows_without_records_still_load(tmp_path):
    """A row written before records existed (no count or record columns at all)."""
    store = RunStore(tmp_path)
    store.record(make_row())
    header, line = store.row_path(RID).read_text().splitlines()
    cols, vals = header.split(","), line.split(",")
    new = ("n_test", "n_test_correct", "n_val", "n_val_correct", "record_sha256")
    keep = [i for i, c in enumerate(cols) if c not in new]
    store.row_path(RID).write_text(
        ",".join(cols[i] for i in keep) + "\n" + ",".join(vals[i] for i in keep) + "\n"
    )
    row = store.read(RID)
    assert row["n_test"] is None and row["record_sha256"] == ""
    assert store.load_record(row) is None


WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from pebench.store import RunStore
import store_rows as t

store = RunStore({root!r})
k = 0
while True:  # record rows with their records as fast as possible until killed
    rid = f"{{k:016x}}"
    row = t.make_row(run_id=rid)
    store.record(row, t.make_record(rid=rid))
    k += 1
"""


def test_random_kills_of_the_pair_write_leave_both_or_neither(tmp_path):
    """30 SIGKILLs at random points of a process writing rows with their records (about 300
    pairs a second): every row reads back with its record (0 mismatched), and after the store's
    tidy no record is left without its row (0 orphaned) and no temp file. The kill between the
    two writes is rare here (the window is a fraction of a millisecond); the tidy tests above
    put a run in exactly that state."""
    import random
    import signal
    import subprocess
    import sys
    import time

    rng = random.Random(7)
    root = tmp_path / "r"
    script = WRITER.format(tests=str(Path(__file__).resolve().parent), root=str(root))
    orphans_seen = 0
    for _ in range(30):
        proc = subprocess.Popen([sys.executable, "-c", script])
        time.sleep(0.6 + rng.uniform(0.0, 0.4))  # past the imports, into the writes
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        store = RunStore(root)
        rows = {p.name[:-4] for p in store.runs.glob("*.csv")}
        records = {p.name[: -len(".record.json")] for p in store.runs.glob("*.record.json")}
        orphans_seen += len(records - rows)
        for rid in rows:  # every row is whole, with its own record
            row = store.read(rid)
            assert store.load_record(row).run_id == rid
        store.tidy()
        assert {p.name[: -len(".record.json")] for p in store.runs.glob("*.record.json")} == rows
        assert not list(store.runs.glob(".*.tmp"))  # the killed writer's temp files too
    assert len(rows) > 30  # the writer got far enough each time
    print(f"\npair-write kill attack: 30 kills, {orphans_seen} records caught between the writes")
