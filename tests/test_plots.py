"""Figures for print: PNG at >= 200 dpi and PDF, seed error bars, labels that never overlap,
and a memory axis that says how memory was measured (one kind per axis)."""

from __future__ import annotations

import itertools
import math
import struct
from pathlib import Path

import pytest
from matplotlib.collections import PathCollection
from report_rows import LB, REG, write
from scipy import stats

from pebench.report import figstyle, plots
from pebench.report import leaderboard as lb
from pebench.report.labels import LABEL_GID

ROOT = Path(__file__).resolve().parents[1]
PLOTS = ROOT / "results" / "plots"
MIN_DPI = 200

committed = pytest.mark.skipif(not any(PLOTS.glob("*.png")), reason="no committed plots yet")


def png_info(data: bytes) -> tuple[int, int, float]:
    """``(width px, height px, dpi)`` from the IHDR and pHYs chunks of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, width, height, dpi = 8, 0, 0, math.nan
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"pHYs":
            x_ppm, y_ppm, unit = struct.unpack(">IIB", body)
            assert unit == 1 and x_ppm == y_ppm  # pixels per metre, square pixels
            dpi = x_ppm * 0.0254
        pos += 12 + length
    return width, height, dpi


def label_boxes(fig) -> list:
    """The window extents of a figure's point labels (drawn with its renderer)."""
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    ax = fig.axes[0]
    return [t.get_window_extent(renderer) for t in ax.texts if t.get_gid() == LABEL_GID]


def assert_no_overlap(fig, name: str) -> None:
    boxes = label_boxes(fig)
    frame = fig.axes[0].get_window_extent(fig.canvas.get_renderer())
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), f"{name}: labels overlap at {a} and {b}"
    for box in boxes:
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1, f"{name}: label outside the axes"
        assert frame.y0 <= box.y0 and box.y1 <= frame.y1, f"{name}: label outside the axes"


@committed
def test_committed_figures_are_print_resolution_png_and_pdf():
    pngs = sorted(PLOTS.glob("*.png"))
    assert pngs
    for png in pngs:
        width, height, dpi = png_info(png.read_bytes())
        assert dpi >= MIN_DPI, f"{png.name}: {dpi:.0f} dpi"
        assert round(dpi) == figstyle.PNG_DPI
        if "_acc_vs_" in png.name:  # the cost figures share one size; the others their own
            assert (width / dpi, height / dpi) == pytest.approx(plots.FIG_SIZE_IN, abs=0.01)
        assert width / dpi >= 3.5  # at least a one-column print width
        pdf = png.with_suffix(".pdf")
        assert pdf.read_bytes()[:5] == b"%PDF-", f"no PDF twin of {png.name}"
        assert b"CreationDate" not in pdf.read_bytes()  # deterministic bytes


@committed
def test_no_two_labels_overlap_on_the_committed_figures():
    """Rendered from the committed rows: the same figures as results/plots (byte-checked by
    test_committed_results), their label boxes read from matplotlib's renderer."""
    df = lb.aggregate(ROOT / "results")
    figures = plots.figures(df, None, None)
    assert {f"{stem}.png" for stem in figures} == {p.name for p in PLOTS.glob("*_acc_vs_*.png")}
    for stem, fig in figures.items():
        labels = [t.get_text() for t in fig.axes[0].texts if t.get_gid() == LABEL_GID]
        assert len(labels) >= 10 and len(set(labels)) == len(labels), stem
        assert_no_overlap(fig, stem)
        # the committed PDF is this figure too (the PNGs are compared in test_committed_results)
        assert plots.encode(fig, "pdf") == (PLOTS / f"{stem}.pdf").read_bytes(), (
            f"results/plots/{stem}.pdf is stale: run `pebench leaderboard --results results`"
        )


def test_labels_of_a_dense_cluster_do_not_overlap(tmp_path):
    """Twenty methods with almost the same cost and accuracy: every label still finds room."""
    for i in range(20):
        for task in LB.tasks:
            write(
                tmp_path,
                task=task,
                method=f"method_{i:02d}",
                method_config="{}",
                params_method=10000 + 10 * i,
                test_top1=0.60 + 0.001 * i,
            )
    for stem, fig in plots.figures(lb.aggregate(tmp_path), **REG).items():
        assert len(label_boxes(fig)) == 20
        assert_no_overlap(fig, stem)


def test_accuracy_has_95_percent_interval_bars(tmp_path):
    """a: seeds 0..2 at 60, 70, 80 % on both tasks; b: one seed, no bar. No counts: the bar is
    the seed part's t interval, mean 70 ± t(0.975, 4 df) * sqrt(2 * 0.25 * 100 / 3)."""
    for seed, acc in enumerate([0.6, 0.7, 0.8]):
        for task in LB.tasks:
            write(tmp_path, task=task, seed=seed, test_top1=acc)
    for task in LB.tasks:
        write(tmp_path, task=task, method="b", method_config="{}", test_top1=0.5)
    (table,) = lb_tables(tmp_path)
    half = {e.label: e.stats.interval.half_width for e in table.entries}
    want = stats.t.ppf(0.975, 4) * math.sqrt(2 * 0.25 * 100 / 3)
    assert half["lora"] == pytest.approx(want) and math.isnan(half["b"])
    fig = plots.figures(lb.aggregate(tmp_path), **REG)["lbtest_acc_vs_params"]
    (bars,) = fig.axes[0].containers
    (segments,) = [c.get_segments() for c in bars.lines[2]]
    assert len(segments) == 1  # lora only
    (x0, y0), (x1, y1) = segments[0]
    assert (y0, y1) == pytest.approx((70.0 - want, 70.0 + want)) and x0 == x1
    assert "95% interval" in fig.legends[0].texts[-1].get_text()


def plotted_x(ax) -> list[float]:
    """The x of every plotted point: scattered rows and the Pareto front's star markers."""
    scattered = [c for c in ax.collections if isinstance(c, PathCollection)]
    xs = [float(x) for c in scattered for x, _ in c.get_offsets()]
    xs += [float(x) for line in ax.lines if line.get_marker() == "*" for x in line.get_xdata()]
    return sorted(xs)


def lb_tables(folder: Path) -> list:
    from pebench.report.tables import tables

    return tables(lb.aggregate(folder), **REG)


def test_memory_axis_names_the_measurement_and_never_mixes_kinds(tmp_path):
    for task in LB.tasks:
        write(tmp_path, task=task, peak_mem_kind="cpu_rss", peak_mem_bytes=400 * 2**20)
        write(
            tmp_path,
            task=task,
            method="b",
            method_config="{}",
            peak_mem_kind="cpu_state",
            peak_mem_bytes=30 * 2**20,
        )
        write(
            tmp_path,
            task=task,
            method="c",
            method_config="{}",
            peak_mem_kind="cuda_allocated",
            peak_mem_bytes=900 * 2**20,
        )
    figures = plots.figures(lb.aggregate(tmp_path), **REG)
    expect = {
        "lbtest_acc_vs_memory_cpu_rss": ("process RSS (CPU, includes Python)", "lora", 400.0),
        "lbtest_acc_vs_memory_cpu_state": (
            "training-state memory above backbone (CPU)",
            "b",
            30.0,
        ),
        "lbtest_acc_vs_memory_cuda_allocated": (
            "device peak memory (CUDA max allocated)",
            "c",
            900.0,
        ),
    }
    assert set(figures) == {"lbtest_acc_vs_params", *expect}
    for stem, (words, method, mib) in expect.items():
        ax = figures[stem].axes[0]
        assert ax.get_xlabel().startswith(words), ax.get_xlabel()
        labels = [t.get_text() for t in ax.texts if t.get_gid() == LABEL_GID]
        assert labels == [method]  # only the rows measured this way
        assert plotted_x(ax) == pytest.approx([mib])
    # one kind: a single memory figure under the usual name
    one = tmp_path / "one"
    for task in LB.tasks:
        write(one, task=task)
    assert set(plots.figures(lb.aggregate(one), **REG)) == {
        "lbtest_acc_vs_params",
        "lbtest_acc_vs_memory",
    }


def test_generate_writes_png_and_pdf_and_drops_figures_of_a_vanished_kind(tmp_path):
    for task in LB.tasks:
        write(tmp_path, task=task, peak_mem_kind="cpu_rss")
        write(tmp_path, task=task, method="b", method_config="{}", peak_mem_kind="cuda_allocated")
    out = lb.generate(tmp_path, tmp_path / "lb.md", **REG)
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    stats_figures = ("acc_improvement", "acc_intervals", "acc_search")
    assert names == sorted(
        f"lbtest_{what}.{ext}"
        for what in (
            "acc_vs_params", "acc_vs_memory_cpu_rss", "acc_vs_memory_cuda_allocated", *stats_figures
        )
        for ext in ("png", "pdf")
    )  # fmt: skip
    assert [p.suffix for p in out["plots"]] == [".png"] * 6
    for path in out["plots"]:
        width, height, dpi = png_info(path.read_bytes())
        assert dpi >= MIN_DPI and width >= 3.5 * MIN_DPI
    for run in (tmp_path / "runs").glob("*.csv"):  # the cuda rows go away
        if ",cuda_allocated," in run.read_text():
            run.unlink()
    lb.generate(tmp_path, tmp_path / "lb.md", **REG)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(
        f"lbtest_{what}.{ext}"
        for what in ("acc_vs_memory", "acc_vs_params", *stats_figures)
        for ext in ("png", "pdf")
    )
