"""Published numbers: the reported.csv reader, recomputed means, their own leaderboard section."""

import shutil
from pathlib import Path

import pytest

from pebench import datasets
from pebench.report import leaderboard
from pebench.report.reported import COLUMNS, ReportedError, read_reported, render_reported

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "reported.csv"


def _cells():
    return read_reported(COMMITTED, datasets.tasks())


def _row_of(lines, method, table):
    start = next(i for i, line in enumerate(lines) if line.endswith(f"table `{table}`"))
    header = [c.strip() for c in lines[start + 2].strip("|").split("|")]
    for line in lines[start + 4 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == method:
            return dict(zip(header, cells, strict=True))
    raise AssertionError(f"{method} not in {table}")


@pytest.mark.parametrize(
    ("table", "method", "groups", "m19", "tol"),
    [  # the sources' own printed means (protocol.md §12): ours are recomputed from the cells
        ("vtab-literature", "ARC", 75.78, 73.37, 0.0),
        ("vtab-literature", "Full FT", 68.97, 65.57, 0.0),
        ("vtab-literature", "Convpass", 76.56, 74.44, 0.0),
        # PETL_Vision printed means of unrounded accuracies; its cells carry one decimal
        ("vtab-petl_vision", "linear", 60.52, 55.86, 0.05),
        ("vtab-petl_vision", "convpass", 76.35, 74.23, 0.05),
    ],
)
def test_vtab_means_are_recomputed_and_match_the_published_ones(table, method, groups, m19, tol):
    lines = render_reported(_cells(), datasets.suites(), datasets.tasks())
    row = _row_of(lines, method, table)
    assert float(row["mean of groups"]) == pytest.approx(groups, abs=tol + 1e-9)
    assert float(row["mean of tasks"]) == pytest.approx(m19, abs=tol + 1e-9)


def test_fgvc_and_video_tables_and_test_selection_is_flagged():
    lines = render_reported(_cells(), datasets.suites(), datasets.tasks())
    assert _row_of(lines, "Full FT", "fgvc-literature")["mean of tasks"] == "88.54"
    arc = _row_of(lines, "ARC", "vtab-literature")
    assert arc["selection"] == "test max §" and arc["pebench method"] == "`arc`"
    assert arc["cifar"] == "72.2"  # the published text, digits kept
    assert _row_of(lines, "Convpass", "vtab-literature")["cifar"] == "72.29"
    text = "\n".join(lines)
    assert "picked the reported epoch on the **test** set" in text
    assert "table `video-literature`" in text


def _write(tmp_path, rows):
    path = tmp_path / "reported.csv"
    path.write_text(",".join(COLUMNS) + "\n" + "".join(r + "\n" for r in rows))
    return path


GOOD = "t,M,lora,vtab/cifar,70.5,0.3,,ViT-B/16,in21k,val200,,paper,somewhere"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (GOOD.replace("vtab/cifar", "vtab/cifra"), r"line 3, column 'task': unknown task"),
        (GOOD.replace("70.5", "170.5"), r"line 3, column 'top1': 170.5 outside \[0.0, 100.0\]"),
        (GOOD.replace("70.5", "n/a"), r"line 3, column 'top1': 'n/a' is not a number"),
        (GOOD.replace("paper", "blog"), r"line 3, column 'source_kind': 'blog' not in"),
        (GOOD.replace("somewhere", ""), r"line 3, column 'source': empty"),
        (GOOD, r"line 3: \('t', 'M', 'vtab/cifar'\) already given on line 2"),
        (GOOD + ",extra", r"line 3: expected 13 fields"),
    ],
)
def test_bad_rows_name_file_line_and_column(tmp_path, bad, message):
    path = _write(tmp_path, [GOOD, bad])
    with pytest.raises(ReportedError, match=message):
        read_reported(path, datasets.tasks())


def test_bad_header_is_refused(tmp_path):
    path = tmp_path / "reported.csv"
    path.write_text("method,top1\nx,1\n")
    with pytest.raises(ReportedError, match="header must be table,method"):
        read_reported(path, datasets.tasks())


def test_leaderboard_keeps_reported_numbers_apart(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results" / "runs", results / "runs")
    out = leaderboard.generate(results, tmp_path / "lb.md", tmp_path / "plots")
    without = out["leaderboard"].read_text()
    assert "Reported numbers" not in without
    shutil.copy(COMMITTED, results / "reported.csv")
    leaderboard.generate(results, tmp_path / "lb.md", tmp_path / "plots")
    text = (tmp_path / "lb.md").read_text()
    measured, reported = text.split("# Reported numbers")
    assert measured == without.rstrip("\n") + "\n\n"  # measured tables untouched
    assert "ARC" in reported and "ARC" not in measured
    assert not leaderboard.is_stale(results, tmp_path / "lb.md")
    # a broken reported.csv: an error naming the line, nothing rewritten
    (results / "reported.csv").write_text(",".join(COLUMNS) + "\n" + GOOD.replace("70.5", "x"))
    with pytest.raises(ReportedError, match="line 2"):
        leaderboard.generate(results, tmp_path / "lb.md", tmp_path / "plots")
    assert (tmp_path / "lb.md").read_text() == text


def test_hostile_reported_cells_are_inert(tmp_path):
    """reported.csv is a file anyone can edit: its cells enter the table as inert text."""
    hostile = (
        't,"<img src=x onerror=alert(1)>",lora,vtab/cifar,70.5,0.3,,"ViT-B/16\n## pwned",in21k,'
        'val200,,paper,"see `repo#1` | <b>x</b>"'
    )
    lines = render_reported(read_reported(_write(tmp_path, [hostile]), datasets.tasks()),
                            datasets.suites(), datasets.tasks())  # fmt: skip
    text = "\n".join(lines)
    assert "<img" not in text and "<b>" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert not any(line.startswith("## pwned") for line in lines)
    (row,) = [line for line in lines if line.startswith("| &lt;img")]
    header = lines[lines.index(row) - 2]
    unescaped = row.replace("\\|", "")
    assert unescaped.count("|") == header.count("|")  # the pipe in the source adds no column
    assert "see `repo#1` \\| &lt;b&gt;x&lt;/b&gt; (paper)" in row  # its own code span kept
