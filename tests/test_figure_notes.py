"""Figures say what they leave out and whose point is whose (#28 item 8)."""

from __future__ import annotations

import math

from report_rows import REG, write

from pebench.report import leaderboard as lb
from pebench.report import plots
from pebench.report.labels import LABEL_GID
from pebench.report.stat_plots import interval_figure
from pebench.report.tables import tables


def _labels(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].texts if t.get_gid() == LABEL_GID]


def _notes(fig) -> str:
    return "\n".join(t.get_text() for t in fig.texts)


def _complete(tmp, method: str, top1: float, **over) -> None:
    for seed in range(2):
        for task in ("lbtest/alpha", "lbtest/beta"):
            write(tmp, task=task, seed=seed, method=method, method_config=f'"{method}"',
                  test_top1=top1 + 0.01 * seed, **over)  # fmt: skip


def test_figures_name_the_rows_they_leave_out(tmp_path):
    _complete(tmp_path, "lora", 0.7)
    _complete(tmp_path, "ssf", 0.6, params_method=1000)
    write(tmp_path, task="lbtest/alpha", method="linear", method_config="{}", test_top1=0.5)
    df = lb.aggregate(tmp_path)
    figs = plots.figures(df, **REG)
    note = "not plotted: 1 row(s) without a result on every task of the suite (linear)"
    for stem in ("lbtest_acc_vs_params", "lbtest_acc_vs_memory"):
        assert note in _notes(figs[stem]) and "linear" not in _labels(figs[stem])
    table = next(t for t in tables(df, **REG) if t.info.name == "lbtest")
    assert note in _notes(interval_figure(table))


def test_two_results_folders_get_two_labels(tmp_path):
    a, b = tmp_path / "reference", tmp_path / "mine"
    _complete(a, "lora", 0.7)
    _complete(b, "lora", 0.6)
    _complete(b, "ssf", 0.65, params_method=1000)
    figs = plots.figures(lb.aggregate([a, b]), **REG)
    labels = _labels(figs["lbtest_acc_vs_params"])
    assert sorted(labels) == ["lora [mine]", "lora [reference]", "ssf [mine]"]


def test_a_single_method_params_plot_has_x_tick_labels(tmp_path):
    _complete(tmp_path, "lora", 0.7)
    fig = plots.figures(lb.aggregate(tmp_path), **REG)["lbtest_acc_vs_params"]
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    shown = [t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi]
    assert shown == ["0.295"]  # lora's 294,912 parameters, in M


def test_the_bars_say_they_are_intervals_of_the_suite_mean(tmp_path):
    _complete(tmp_path, "lora", 0.7)
    _complete(tmp_path, "ssf", 0.6, params_method=1000)
    fig = plots.figures(lb.aggregate(tmp_path), **REG)["lbtest_acc_vs_params"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "95% interval of the suite mean (not the table's ± per-task seed std)" in legend


def test_a_cpu_memory_figure_says_what_cpu_state_measures(tmp_path):
    _complete(tmp_path, "lora", 0.7, peak_mem_kind="cpu_state")
    _complete(tmp_path, "full", 0.6, peak_mem_kind="cpu_state", peak_mem_bytes=50.0 * 2**20)
    fig = plots.figures(lb.aggregate(tmp_path), **REG)["lbtest_acc_vs_memory"]
    notes = _notes(fig)
    assert notes.startswith("cpu_state: the process's peak resident memory above what it held")
    assert "no device-memory ranking" in notes
    assert not math.isnan(fig.axes[0].get_xlim()[0])
