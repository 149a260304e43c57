"""Hand-edited and damaged result files: refused by name, or skipped on request, never half-read."""

import math

import pytest
from report_rows import make_row

from pebench import results as R
from pebench.cli import main
from pebench.store import RunStore


def _write(tmp_path, text, name=None):
    row = make_row()
    path = tmp_path / "runs" / (name or f"{row['run_id']}.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text(row) if callable(text) else text, encoding="utf-8")
    return path, row


def _csv(row, **over):
    return R.rows_to_csv([dict(row, **over)])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: R.rows_to_csv([r]).splitlines()[0] + "\n", "holds 0 rows"),
        (lambda r: R.rows_to_csv([r, r]), "holds 2 rows"),
        (lambda r: _csv(r, test_top1=math.nan), "an ok final run without test_top1"),
        (lambda r: _csv(r, params_method=-5), "expected a count >= 0"),
        (lambda r: _csv(r, train_loss=-math.inf), "expected a finite number"),
    ],
)
def test_bad_run_files_are_refused_by_name(tmp_path, make, message):
    path, _ = _write(tmp_path, make)
    with pytest.raises(R.ResultsError, match=message) as err:
        RunStore(tmp_path).rows()
    assert str(path) in str(err.value)


def test_a_utf8_bom_is_accepted(tmp_path):
    _, row = _write(tmp_path, lambda r: "\ufeff" + R.rows_to_csv([r]))
    assert [r["run_id"] for r in RunStore(tmp_path).rows()] == [row["run_id"]]


def test_leaderboard_skip_bad_builds_from_the_rest_and_names_each_file(tmp_path, capsys):
    _write(tmp_path, lambda r: R.rows_to_csv([r]))
    bad, _ = _write(tmp_path, "run_id,phase\nx,final\n", name="broken.csv")
    out = tmp_path / "lb.md"
    assert main(["leaderboard", "--results", str(tmp_path), "--output", str(out)]) == 2
    assert not out.exists()  # refused as a whole by default
    capsys.readouterr()
    args = ["leaderboard", "--results", str(tmp_path), "--output", str(out), "--skip-bad"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert f"pebench leaderboard: skipped {bad}" in captured.err and out.exists()
    assert "[PosixPath" not in captured.out and str(out) in captured.out.splitlines()


def test_row_files_follow_the_users_umask(tmp_path):
    """Rows were forced to 0o644 (world-readable) whatever a private umask said."""
    import os

    old = os.umask(0o077)
    try:
        RunStore(tmp_path).record(make_row())
    finally:
        os.umask(old)
    (path,) = (tmp_path / "runs").glob("*.csv")
    assert path.stat().st_mode & 0o777 == 0o600
