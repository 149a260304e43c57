"""Result rows: schema, atomic writes, resume, validation errors that name file and line."""

import csv
import math

import pytest

from pebench import results as R
from pebench.store import RunStore


def make_row(**kw):
    row = {k: (math.nan if kind in ("float", "frac") else "") for k, kind in R.SCHEMA.items()}
    row.update(
        phase="final",
        trial=0,
        lr=1e-3,
        weight_decay=1e-4,
        method="lora",
        preset="default",
        method_config="{}",
        method_origin="builtin",
        method_reconstruction=False,
        backbone="b",
        weights="random",
        task="demo/shapes",
        suite="demo",
        task_group="natural",
        task_version="1",
        data_format="procedural",
        budget="demo-v1",
        seed=0,
        pebench_version="0.1.0",
        method_source="5ea7c0de5ea7c0de",
        test_top1=0.5,
        params_method=10,
        params_head=5,
        params_backbone=100,
        params_inference_extra=0,
        git_dirty=False,
        status="ok",
    )
    row.update(kw)
    row["run_id"] = R.run_id(row)
    return row


def test_run_id_is_stable_and_depends_on_identity():
    a, b = make_row(), make_row(test_top1=0.9)
    assert a["run_id"] == b["run_id"]  # metrics are not identity
    assert make_row(seed=1)["run_id"] != a["run_id"]
    assert len(a["run_id"]) == 16
    # the data lineage is identity (a NOAH and a TFDS preparation are different runs) ...
    assert make_row(data_manifest="m2")["run_id"] != make_row(data_manifest="m1")["run_id"]
    assert make_row(data_format="tfds")["run_id"] != a["run_id"]
    # ... where the executor and job that ran it are not
    assert make_row(executor="ray", job_id="7")["run_id"] == a["run_id"]


def test_rows_written_before_added_columns_still_read(tmp_path):
    row = make_row(data_manifest="")
    keep = [c for c in R.COLUMNS if c not in R.ADDED_COLUMNS]
    path = tmp_path / "runs" / f"{row['run_id']}.csv"
    path.parent.mkdir()
    text = R.rows_to_csv([row]).splitlines()
    header = text[0].split(",")
    values = next(csv.reader([text[1]]))
    old = dict(zip(header, values, strict=True))
    path.write_text(",".join(keep) + "\n" + ",".join(old[c] for c in keep) + "\n")
    (back,) = RunStore(tmp_path).rows()
    empty = {"str": "", "count": None}
    for c in R.ADDED_COLUMNS:
        if R.SCHEMA[c] == "float":
            assert math.isnan(back[c]), c
        else:
            assert back[c] == empty[R.SCHEMA[c]], c
    assert back["test_top1"] == 0.5 and back["run_id"] == row["run_id"]
    # but a file missing any other column is still refused
    path.write_text(",".join(keep[1:]) + "\n" + ",".join(old[c] for c in keep[1:]) + "\n")
    with pytest.raises(R.ResultsError, match="missing \\['run_id'\\]"):
        RunStore(tmp_path).rows()


def test_write_read_roundtrip_and_no_temp_left(tmp_path):
    row = make_row()
    path = RunStore(tmp_path).row_path(RunStore(tmp_path).record(row)["run_id"])
    assert path.name == f"{row['run_id']}.csv"
    (back,) = R.read_csv(path)
    assert back["test_top1"] == 0.5 and back["params_method"] == 10 and back["git_dirty"] is False
    assert math.isnan(back["val_top1"])
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [path.name]
    assert RunStore(tmp_path).finished(row["run_id"])["run_id"] == row["run_id"]


def test_failed_rows_are_not_finished(tmp_path):
    row = make_row(status="failed", error="boom", test_top1=math.nan, params_method=None)
    RunStore(tmp_path).record(row)
    assert RunStore(tmp_path).finished(row["run_id"]) is None
    (back,) = RunStore(tmp_path).rows()
    assert back["params_method"] is None and back["error"] == "boom"


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("test_top1", "1.5", "fraction"),
        ("seed", "zero", "invalid literal"),
        ("status", "great", "status 'great'"),
        ("phase", "test", "phase 'test'"),
    ],
)
def test_bad_values_name_file_line_and_column(tmp_path, column, value, message):
    row = make_row()
    path = RunStore(tmp_path).row_path(RunStore(tmp_path).record(row)["run_id"])
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    import csv
    import io

    cells = next(csv.reader(io.StringIO(lines[1])))
    cells[header.index(column)] = value
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(cells)
    path.write_text(lines[0] + "\n" + buf.getvalue())
    with pytest.raises(R.ResultsError, match=message) as err:
        RunStore(tmp_path).rows()
    assert str(path) in str(err.value) and "line 2" in str(err.value)


def test_unknown_columns_and_bad_header_are_refused(tmp_path):
    with pytest.raises(R.ResultsError, match="outside the schema"):
        R.rows_to_csv([dict(make_row(), extra=1)])
    bad = tmp_path / "runs" / "x.csv"
    bad.parent.mkdir()
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(R.ResultsError, match="header mismatch"):
        RunStore(tmp_path).rows()


def test_run_id_must_match_file_name(tmp_path):
    row = make_row()
    path = RunStore(tmp_path).row_path(RunStore(tmp_path).record(row)["run_id"])
    path.rename(path.with_name("0000000000000000.csv"))
    with pytest.raises(R.ResultsError, match="does not match the file name"):
        RunStore(tmp_path).rows()
