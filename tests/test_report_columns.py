"""pebench.report.columns: a metric column is one entry of the column table.

The extra columns here exist only in the tests (passed as ``columns=`` or monkeypatched into
:data:`pebench.report.columns.COLUMNS`); the committed leaderboard is rendered without them.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from report_rows import REG, by_method, table, write

from pebench.report import columns
from pebench.report import leaderboard as lb
from pebench.report.columns import MIB, Column, fixed, maximum

ROOT = Path(__file__).resolve().parents[1]

FLOPS = Column(
    "GFLOPs/img",
    fixed(2, scale=1e9),
    key="flops_per_image",
    legend="GFLOPs/img: forward FLOPs per image in 10⁹, mean over runs",
)
PEAK_MEM_LEGEND = (
    "peak mem: maximum over runs, with how it was measured (`cuda_allocated`: device peak "
    "memory (CUDA max allocated), `cpu_state`: training-state memory above backbone (CPU), "
    "`cpu_rss`: process RSS (CPU, includes Python))"
)
CHECKPOINT = Column(
    "checkpoint (MiB)",
    fixed(3, scale=MIB),
    key="checkpoint_bytes",
    agg=maximum,
    legend="checkpoint: size of the saved trainable state, maximum over runs",
)


def _legend(md: str) -> list[str]:
    """The bullets of the legend (the first list of the document)."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("- "))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("- "))
    return lines[start:end]


def test_added_column_renders_header_value_and_legend(tmp_path, monkeypatch):
    for seed, (flops, ckpt) in enumerate([(1.0e9, 1.5 * MIB), (2.0e9, 2.5 * MIB)]):
        for task in ("lbtest/alpha", "lbtest/beta"):
            write(tmp_path, task=task, seed=seed, flops_per_image=flops, checkpoint_bytes=ckpt)
    df = lb.aggregate(tmp_path)
    plain = lb.render_markdown(df, **REG)
    assert "GFLOPs/img" not in plain and "checkpoint" not in plain

    # as a parameter, placed before the seeds column
    cols = (*columns.COLUMNS[:-1], FLOPS, columns.COLUMNS[-1])
    md = lb.render_markdown(df, columns=cols, **REG)
    rows = table(md, "lbtest")
    assert list(rows[0])[-2:] == ["GFLOPs/img", "seeds"]
    assert by_method(rows)["lora"]["GFLOPs/img"] == "1.50"  # mean of 1e9 and 2e9
    legend = _legend(md)
    assert "- GFLOPs/img: forward FLOPs per image in 10⁹, mean over runs." in legend
    # its own bullet after the existing column bullets, before the ranking bullet
    assert legend.index("- GFLOPs/img: forward FLOPs per image in 10⁹, mean over runs.") == 10
    assert legend[-1].startswith("- Rows are sorted")
    # a legend group stays one bullet even with a column inserted between its members
    assert legend[8].startswith("- selected lr: the learning rates the validation search")
    assert legend[9] == f"- {PEAK_MEM_LEGEND}; img/s: mean over runs; seeds: seeds per task."
    # nothing else changed: dropping the column's cells and bullet gives the plain rendering
    assert len(md.splitlines()) == len(plain.splitlines()) + 1

    # monkeypatched into the table (the default), aggregated by maximum
    monkeypatch.setattr(columns, "COLUMNS", (*columns.COLUMNS, CHECKPOINT))
    md = lb.render_markdown(df, **REG)
    lora = by_method(table(md, "lbtest"))["lora"]
    assert lora["checkpoint (MiB)"] == "2.500"
    assert "- checkpoint: size of the saved trainable state, maximum over runs." in md


def test_added_column_missing_values(tmp_path):
    write(tmp_path, task="lbtest/alpha", flops_per_image=math.nan)
    md = lb.render_markdown(lb.aggregate(tmp_path), columns=(*columns.COLUMNS, FLOPS), **REG)
    assert by_method(table(md, "lbtest"))["lora"]["GFLOPs/img"] == "—"


@pytest.mark.skipif(
    not any((ROOT / "results" / "runs").glob("*.csv")), reason="no committed results yet"
)
def test_committed_leaderboard_unchanged_without_extra_column(monkeypatch):
    assert not lb.is_stale(ROOT / "results", ROOT / "leaderboard.md")
    monkeypatch.setattr(columns, "COLUMNS", (*columns.COLUMNS, FLOPS))
    assert lb.is_stale(ROOT / "results", ROOT / "leaderboard.md")


def test_column_table_shape():
    first = columns.COLUMNS[0]
    assert isinstance(first, Column) and first.header == "method"  # the row label comes first
    headers = [c.header for c in columns.COLUMNS if isinstance(c, Column)]
    assert len(headers) == len(set(headers))
    # legend: the accuracy bullets first, then the cost columns' bullets, fragments joined
    assert columns.legend(columns.COLUMNS) == [
        columns.TASKS.legend,
        columns.GROUPS.legend,
        columns.MEANS.legend,
        columns.INTERVAL.legend,
        columns.UB_RANK.legend,
        "**params (M) excl. head**: trainable parameters the method adds or unfreezes, in "
        "millions (one precision per table), classification head excluded; **incl. head** adds "
        "the row's mean head size over its tasks",
        columns.FLAGS.legend,
        columns.SELECTED_LR.legend,
        f"{PEAK_MEM_LEGEND}; img/s: mean over runs; seeds: seeds per task",
    ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"key": "no_such_field"}, "not a result-row field"),
        ({}, "exactly one of key and value"),
        ({"key": "flops_per_image", "value": len}, "exactly one of key and value"),
    ],
)
def test_column_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Column("x", **kwargs)


def test_formatters():
    assert fixed(1)(2.25) == "2.2" and fixed(2, scale=1e9)(1.5e9) == "1.50"
    assert fixed(1)(math.nan) == "—"
    assert maximum([1.0, math.nan, 3.0]) == 3.0 and math.isnan(maximum([math.nan]))
    assert columns.fmt_range([3]) == "3" and columns.fmt_range([2, 3]) == "2–3"
    assert columns.fmt_acc([80.0, 82.0, 84.0]) == "82.0 ± 2.0" and columns.fmt_acc(None) == "—"
    got = columns.fmt_mem({"cuda_allocated": 9 * MIB, "cpu_rss": 75 * MIB})
    assert got == "75.0 (cpu_rss); 9.0 (cuda_allocated)"
