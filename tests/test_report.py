"""The report (pebench.report): values, averaging conventions, failure handling, determinism,
and where ``pebench leaderboard`` writes.

Suites are passed explicitly (``suites=``/``tasks=``, from :mod:`report_rows`) so the global
registry is never mutated; the default path through the global registry is exercised in a
subprocess.
"""

from __future__ import annotations

import csv
import io
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from report_rows import LB, REG, by_method, make_row, status_table, table, write

from pebench import results
from pebench.report import leaderboard as lb
from pebench.report.columns import fmt_params, params_decimals
from pebench.report.tables import tables
from pebench.store import RunStore


def populate(tmp: Path) -> None:
    """Three seeds of lora on both lbtest tasks; one seed of linear on alpha only; extras."""
    for seed, (a, b) in enumerate([(0.80, 0.60), (0.82, 0.62), (0.84, 0.70)]):
        write(tmp, task="lbtest/alpha", seed=seed, test_top1=a)
        write(tmp, task="lbtest/beta", seed=seed, test_top1=b, params_head=15380)
    write(tmp, method="linear", method_config="{}", params_method=0, test_top1=0.9)
    # search-phase rows with an absurd accuracy must not enter any accuracy cell
    for trial in range(2):
        write(tmp, phase="search", trial=trial, test_top1=0.99, val_top1=0.99)
    write(tmp, phase="search", trial=2, test_top1=math.nan, val_top1=math.nan, status="diverged")
    # a failed final run (seed 3) must not change the lora numbers but must be counted
    write(tmp, seed=3, test_top1=math.nan, status="oom", error="CUDA out of memory")
    # a diverged final run keeps its (chance) test accuracy in the CSV but is not an "ok" result
    write(tmp, seed=4, test_top1=0.05, status="diverged", error="loss is NaN at step 12")


# ---------------------------------------------------------------------------- values --
def test_task_cells_and_suite_mean(tmp_path):
    populate(tmp_path)
    md = lb.render_markdown(lb.aggregate(tmp_path), **REG)
    rows = by_method(table(md, "lbtest"))
    lora = rows["lora"]
    # alpha: 80, 82, 84 -> mean 82.0, sample std 2.0; beta: 60, 62, 70 -> 64.0, std sqrt(28)
    assert lora["alpha"] == "82.0 ± 2.0"
    assert lora["beta"] == f"64.0 ± {math.sqrt(28):.1f}" == "64.0 ± 5.3"
    assert lora["mean"] == "73.00"  # (82 + 64) / 2
    assert lora["seeds"] == "3"
    assert lora["params (M) excl. head"] == "0.2949"
    # head incl.: 294912 + mean(7690, 15380) = 306447 -> 0.3064 M
    assert lora["params (M) incl. head"] == "0.3064"
    assert lora["peak mem (MiB)"] == "100.0 (cpu_rss)"
    assert lora["train img/s"] == "10.0" and lora["eval img/s"] == "30.0"
    # linear: one seed on alpha only -> plain number, beta missing, no suite mean
    lin = rows["linear"]
    assert lin["alpha"] == "90.0" and lin["beta"] == "—" and lin["mean"] == "—"
    assert lin["params (M) excl. head"] == "0"
    # its own head only (alpha: 7690): another row's tasks never change it; one precision:
    # four decimals give the smallest count (0.0077 M) two significant digits
    assert lin["params (M) incl. head"] == "0.0077"
    # sorted by suite mean: complete rows first even though linear's alpha is higher
    assert [r["method"] for r in table(md, "lbtest")] == ["lora", "linear"]
    assert md.splitlines()[0] == lb.header() == lb.HEADER.format(runs="results/runs/*.csv")


def _lora_and_bitfit_without_str2(tmp_path):
    """The lbvtab table of lora on all 4 tasks and bitfit (0.7 each) without ``str2``."""
    acc = {"lbvtab/nat1": 0.9, "lbvtab/spe1": 0.8, "lbvtab/str1": 0.3, "lbvtab/str2": 0.5}
    for task, a in acc.items():
        write(tmp_path, task=task, test_top1=a)
    for task in ["lbvtab/nat1", "lbvtab/spe1", "lbvtab/str1"]:  # str2 missing
        write(tmp_path, task=task, method="bitfit", method_config="{}", test_top1=0.7)
    return lb.render_markdown(lb.aggregate(tmp_path), **REG)


def test_vtab_two_means_hand_computed(tmp_path):
    md = _lora_and_bitfit_without_str2(tmp_path)
    rows = by_method(table(md, "lbvtab"))
    lora = rows["lora"]
    # mean of 4 = (90 + 80 + 30 + 50) / 4 = 62.5; groups 90, 80, (30 + 50) / 2 = 40 -> 70.0
    assert lora["mean of 4"] == "62.50"
    assert lora["mean of group means"] == "70.00"
    assert lora["str2"] == "50.0"
    bitfit = rows["bitfit"]
    assert bitfit["str2"] == "—"
    assert bitfit["mean of 4"] == "—" and bitfit["mean of group means"] == "—"


def test_vtab_rank_by_group_means(tmp_path):
    # a: tasks 90/80/30/50 -> mean 62.5, groups 70.0; b: 60/60/70/70 -> mean 65.0, groups 63.33
    for task, a, b in [
        ("lbvtab/nat1", 0.9, 0.6),
        ("lbvtab/spe1", 0.8, 0.6),
        ("lbvtab/str1", 0.3, 0.7),
        ("lbvtab/str2", 0.5, 0.7),
    ]:
        write(tmp_path, task=task, method="a", test_top1=a)
        write(tmp_path, task=task, method="b", test_top1=b)
    md = lb.render_markdown(lb.aggregate(tmp_path), **REG)
    rows = table(md, "lbvtab")
    assert [r["method"] for r in rows] == ["a", "b"]
    assert rows[1]["mean of 4"] == "65.00" and rows[1]["mean of group means"] == "63.33"


def test_labels_reconstruction_random_preset(tmp_path):
    for task in LB.tasks:
        write(tmp_path, task=task, method="lv_adapter", method_reconstruction=True)
        write(tmp_path, task=task, method="lora", weights="random", test_top1=0.1)
        write(tmp_path, task=task, method="lora", preset="r16", method_config='{"r": 16}')
    md = lb.render_markdown(lb.aggregate(tmp_path), **REG)
    names = [r["method"] for r in table(md, "lbtest")]
    assert "lv_adapter (pebench reconstruction)" in names
    assert "lora †" in names
    assert "lora.r16" in names
    assert lb.RANDOM_NOTE in md
    # one pretrained weights tag and random init: said once above the table, no column
    assert "weights" not in table(md, "lbtest")[0]
    assert "weights `orig_in21k` (random init where marked †)" in md


def test_search_and_failed_rows_counted_not_averaged(tmp_path):
    populate(tmp_path)
    md = lb.render_markdown(lb.aggregate(tmp_path), **REG)
    st = {r["method"]: r for r in status_table(md, "lbtest")}
    assert list(st) == ["linear", "lora", "**total**"]  # one line per method
    lora = st["lora"]
    assert (lora["search"], lora["final"]) == ("3", "8")
    assert (lora["ok"], lora["diverged"], lora["oom"]) == ("8", "2", "1")
    assert st["**total**"]["ok"] == "**9**" and st["**total**"]["diverged"] == "**2**"
    assert st["**total**"]["search"] == "**3**" and st["**total**"]["final"] == "**9**"
    assert "CUDA out of memory" in md and "**oom**" in md and "loss is NaN at step 12" in md
    # accuracy unaffected by the 0.99 search rows and by the oom and diverged seeds
    assert by_method(table(md, "lbtest"))["lora"]["alpha"] == "82.0 ± 2.0"


def test_config_variants_varying_params_and_memory(tmp_path):
    # same method/preset, two configs (e.g. --set r=4): two rows, told apart by a config hash
    for task, pm in [("lbtest/alpha", 1000), ("lbtest/beta", 3000)]:
        write(tmp_path, task=task, method_config='{"r": 4}', params_method=pm)
    for seed, mem in enumerate([50.0, 75.0]):
        for task in LB.tasks:
            write(tmp_path, task=task, seed=seed, peak_mem_bytes=mem * 1024**2)
    write(
        tmp_path,
        task="lbtest/alpha",
        seed=2,
        peak_mem_bytes=9.0 * 1024**2,
        peak_mem_kind="cuda_allocated",
    )
    md = lb.render_markdown(lb.aggregate(tmp_path), **REG)
    rows = table(md, "lbtest")
    assert len(rows) == 2 and all(r["method"].startswith("lora [cfg ") for r in rows)
    small = next(r for r in rows if r["params (M) excl. head"].endswith("‡"))
    assert small["params (M) excl. head"] == "0.0020 ‡"  # mean of 1000 and 3000
    big = next(r for r in rows if r is not small)
    assert big["params (M) excl. head"] == "0.2949"  # the table's one precision
    assert lb.VARIES_NOTE in md
    big = next(r for r in rows if r is not small)
    assert big["peak mem (MiB)"] == "75.0 (cpu_rss); 9.0 (cuda_allocated)"  # kinds by name
    assert big["seeds"] == "2–3"


def test_params_formatting():
    assert fmt_params(0, 4) == "0"
    assert fmt_params(96, 6) == "0.000096"
    assert fmt_params(205824, 4) == "0.2058"
    assert fmt_params(85798656, 2) == "85.80"
    assert fmt_params(math.nan, 2) == "—"
    # decimals: the smallest non-zero count keeps two significant digits, within [2, 6]
    assert params_decimals([0, 960, 458600]) == 5
    assert params_decimals([294912, 85798656]) == 2
    assert params_decimals([7690, 294912]) == 4
    assert params_decimals([0]) == 2 and params_decimals([10]) == 6


def test_stale_task_version_and_rerun_superseded(tmp_path):
    for task in LB.tasks:
        write(tmp_path, task=task, test_top1=0.5)
    write(tmp_path, task="lbtest/alpha", task_version="0", test_top1=0.99)
    # a newer rerun of the same (config, task, seed) with another pebench version wins
    write(
        tmp_path,
        task="lbtest/beta",
        pebench_version="0.2.0",
        created_at="2025-02-01",
        test_top1=0.7,
    )
    md = lb.render_markdown(lb.aggregate(tmp_path), **REG)
    lora = by_method(table(md, "lbtest"))["lora"]
    assert lora["alpha"] == "50.0" and lora["beta"] == "70.0" and lora["seeds"] == "1"
    assert "task version other than the registered one" in md
    assert "superseded" in md


# ----------------------------------------------------------------------------- pareto --
def test_pareto_front_hand_example():
    pts = [(0.0, 60.0), (0.3, 70.0), (0.2, 65.0), (0.5, 68.0), (1.0, 72.0), (0.3, 69.0)]
    # (0.5, 68) is dominated by (0.3, 70); (0.3, 69) by (0.3, 70)
    assert lb.pareto_front(pts) == [0, 2, 1, 4]
    assert lb.pareto_front([]) == []
    assert lb.pareto_front([(1.0, 5.0), (1.0, 5.0)]) == [0, 1]  # duplicates both kept
    assert lb.pareto_front([(math.nan, 99.0), (1.0, 1.0)]) == [1]


# ------------------------------------------------------------------ aggregate / generate --
def test_aggregate_columns_and_order(tmp_path):
    populate(tmp_path)
    rows = lb.aggregate(tmp_path)
    assert all(list(r) == [*results.COLUMNS, "results_dir"] for r in rows)
    assert {r["results_dir"] for r in rows} == {str(tmp_path)}
    assert len(rows) == 12
    keys = [tuple(r[k] for k in lb.SORT_KEYS) for r in rows]
    assert keys == sorted(keys)
    # plain values as the store parsed them: a count stays an int, a missing one None
    assert all(type(r["params_method"]) is int and r["n_test"] is None for r in rows)
    (tmp_path / "nothing" / "runs").mkdir(parents=True)
    empty = lb.aggregate(tmp_path / "nothing")
    assert empty == []
    assert "No results yet." in lb.render_markdown(empty, **REG)


def test_generate_writes_roundtrip_csv_and_plots(tmp_path):
    populate(tmp_path)
    md_path = tmp_path / "leaderboard.md"
    out = lb.generate(tmp_path, md_path, **REG)
    assert out["results_csv"] == tmp_path / "results.csv"
    back = results.read_csv(out["results_csv"])
    expect = lb.aggregate(tmp_path)
    assert [r["run_id"] for r in back] == [r["run_id"] for r in expect]
    assert back[0]["test_top1"] == expect[0]["test_top1"]
    # the header names the run files relative to the leaderboard's folder
    assert md_path.read_text() == lb.render_markdown(expect, runs="runs/*.csv", **REG)
    stems = ["acc_improvement", "acc_intervals", "acc_search", "acc_vs_memory", "acc_vs_params"]
    names = sorted(p.name for p in out["plots"])
    assert names == [f"lbtest_{s}.png" for s in stems]
    pdfs = sorted(p.name for p in out["plots_pdf"])
    assert pdfs == [f"lbtest_{s}.pdf" for s in stems]
    first = {p.name: p.read_bytes() for p in out["plots"]}
    for data in first.values():
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
        assert b"Software" not in data and b"matplotlib" not in data.lower()
    lb.generate(tmp_path, md_path, **REG)
    assert {p.name: p.read_bytes() for p in out["plots"]} == first
    again = lb.plot(lb.aggregate(tmp_path), tmp_path / "other", **REG)
    assert {p.name: p.read_bytes() for p in again} == first


def test_plot_placeholder_when_no_complete_row(tmp_path):
    write(tmp_path, task="lbtest/alpha")
    paths = lb.plot(lb.aggregate(tmp_path), tmp_path / "plots", **REG)
    stems = ["acc_improvement", "acc_intervals", "acc_search", "acc_vs_memory", "acc_vs_params"]
    assert [p.name for p in paths] == [f"lbtest_{s}.png" for s in stems]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def _corrupt(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    "damage, expect",
    [
        (lambda p: _corrupt(p, ",294912,", ",29x912,"), "column 'params_method'"),
        (lambda p: _corrupt(p, "run_id,", "runid,"), "header mismatch"),
        (lambda p: _corrupt(p, ",0.8,", ",80.0,"), "column 'test_top1'"),
    ],
    ids=["bad-number", "wrong-header", "fraction-above-1"],
)
def test_malformed_csv_writes_nothing(tmp_path, damage, expect):
    populate(tmp_path)
    bad = RunStore(tmp_path).row_path(
        make_row(task="lbtest/alpha", seed=0, test_top1=0.8)["run_id"]
    )
    damage(bad)
    md_path = tmp_path / "leaderboard.md"
    with pytest.raises(results.ResultsError) as err:
        lb.generate(tmp_path, md_path, **REG)
    assert str(bad) in str(err.value) and expect in str(err.value)
    if expect != "header mismatch":
        assert "line 2" in str(err.value)
    assert not md_path.exists()
    assert not (tmp_path / "results.csv").exists()
    assert not (tmp_path / "plots").exists()
    # an existing leaderboard is left exactly as it was
    md_path.write_text("old\n")
    with pytest.raises(results.ResultsError):
        lb.generate(tmp_path, md_path, **REG)
    assert md_path.read_text() == "old\n"
    with pytest.raises(results.ResultsError):
        lb.is_stale(tmp_path, md_path, **REG)


def test_is_stale(tmp_path):
    populate(tmp_path)
    md_path = tmp_path / "leaderboard.md"
    assert lb.is_stale(tmp_path, md_path, **REG)  # missing
    lb.generate(tmp_path, md_path, **REG)
    assert not lb.is_stale(tmp_path, md_path, **REG)
    write(tmp_path, task="lbtest/beta", method="linear", method_config="{}", params_method=0)
    assert lb.is_stale(tmp_path, md_path, **REG)
    lb.generate(tmp_path, md_path, **REG)
    assert not lb.is_stale(tmp_path, md_path, **REG)
    md_path.write_text(md_path.read_text() + "hand edit\n")
    assert lb.is_stale(tmp_path, md_path, **REG)


def test_unregistered_suite_has_no_mean(tmp_path):
    write(tmp_path, task="zzz/one", suite="zzz")
    md = lb.render_markdown(lb.aggregate(tmp_path), **REG)
    assert by_method(table(md, "zzz"))["lora"]["mean"] == "—"
    assert "not registered" in md


# ------------------------------------------------------------ global registry, no torch --
def test_default_registry_path_without_torch(tmp_path):
    """Register a suite globally in a fresh process, generate(), and check torch stayed out."""
    code = textwrap.dedent(
        f"""
        import sys
        from pebench.datasets import Suite, TaskSpec, register_suite
        from pebench.store import RunStore
        from pebench.report import leaderboard as lb
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import report_rows as t
        register_suite(t.LB, t.LB_TASKS)
        for seed in range(2):
            for task in t.LB.tasks:
                RunStore({str(tmp_path)!r}).record(t.make_row(task=task, seed=seed))
        out = lb.generate({str(tmp_path)!r}, {str(tmp_path / "lb.md")!r})
        assert not lb.is_stale({str(tmp_path)!r}, {str(tmp_path / "lb.md")!r})
        bad = [m for m in ("torch", "timm", "torchvision") if m in sys.modules]
        assert not bad, bad
        print(len(out["plots"]))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # no pyplot needed
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "5"  # accuracy vs params and vs memory, and the 3 statistics
    md = (tmp_path / "lb.md").read_text()
    assert by_method(table(md, "lbtest"))["lora"]["mean"] == "50.00"


def test_hostile_fields_render_as_inert_text(tmp_path):
    """Method, task, suite and error fields come from editable files: no HTML, no headings."""
    write(tmp_path, method="<img src=x onerror=alert(1)>")
    write(tmp_path, seed=1, status="failed", test_top1=math.nan,
          error="boom\n## pwned\n<script>alert(1)</script> `x` | y")  # fmt: skip
    md = lb.render_markdown(lb.aggregate(tmp_path), **REG)
    assert "<img" not in md and "<script>" not in md
    assert "&lt;img src=x onerror=alert(1)&gt;" in md and "&lt;script&gt;" in md
    assert not any(line.startswith("## pwned") for line in md.splitlines())


# ------------------------------------------------------------ paper tables (issue 15) --
def test_group_means_shown_as_soon_as_the_group_is_complete(tmp_path):
    md = _lora_and_bitfit_without_str2(tmp_path)
    rows = table(md, "lbvtab")
    header = list(rows[0])
    i = header.index("Natural")
    assert header[i - 2 : i + 5] == [  # the tasks, then the groups, then both means
        "str1",
        "str2",
        "Natural",
        "Specialized",
        "Structured",
        "mean of 4",
        "mean of group means",
    ]
    lora, bitfit = by_method(rows)["lora"], by_method(rows)["bitfit"]
    assert (lora["Natural"], lora["Specialized"], lora["Structured"]) == ("90.00", "80.00", "40.00")
    assert (lora["mean of 4"], lora["mean of group means"]) == ("62.50", "70.00")
    # bitfit: its natural and specialized groups are complete, structured is not
    assert (bitfit["Natural"], bitfit["Specialized"], bitfit["Structured"]) == (
        "70.00",
        "70.00",
        "—",
    )
    assert bitfit["mean of 4"] == "—" and bitfit["mean of group means"] == "—"
    assert "as soon as every task of **that group** has a result" in md


def test_mean_suite_with_single_task_groups_has_no_group_columns(tmp_path):
    for task in LB.tasks:  # lbtest: one group "g" for both tasks
        write(tmp_path, task=task)
    header = list(table(lb.render_markdown(lb.aggregate(tmp_path), **REG), "lbtest")[0])
    assert "G" not in header and header[header.index("beta") + 1] == "mean"


def test_head_mean_of_a_row_does_not_change_when_other_rows_are_added(tmp_path):
    def heads() -> dict[str, float]:
        (suite,) = tables(lb.aggregate(tmp_path), **REG)
        return {e.label: e.params_head for e in suite.entries}

    write(tmp_path, task="lbtest/alpha", params_head=7690)
    write(tmp_path, task="lbtest/beta", params_head=7690)
    assert heads() == {"lora": 294912 + 7690}
    # another method, on one task, with another head size (another backbone width, say)
    write(tmp_path, task="lbtest/beta", method="bitfit", method_config="{}", params_head=99000)
    assert heads() == {"lora": 294912 + 7690, "bitfit": 294912 + 99000}
    rows = by_method(table(lb.render_markdown(lb.aggregate(tmp_path), **REG), "lbtest"))
    assert rows["lora"]["params (M) incl. head"] == "0.30"


def test_params_column_prints_one_precision(tmp_path):
    for method, count in [("a", 960), ("b", 17792), ("c", 458600), ("d", 0)]:
        for task in LB.tasks:
            write(tmp_path, task=task, method=method, method_config="{}", params_method=count)
    rows = by_method(table(lb.render_markdown(lb.aggregate(tmp_path), **REG), "lbtest"))
    cells = {m: rows[m]["params (M) excl. head"] for m in "abcd"}
    assert cells == {"a": "0.00096", "b": "0.01779", "c": "0.45860", "d": "0"}


def test_a_long_weights_tag_is_said_once_not_per_row(tmp_path):
    tag = "embedded:pebench_vit_micro.fractal_v1@e02ac75bc0caa128"
    for method in ("lora", "bitfit", "ssf"):
        for task in LB.tasks:
            write(tmp_path, task=task, method=method, method_config="{}", weights=tag)
            write(tmp_path, task=task, method=method, method_config="{}", weights="random")
    md = lb.render_markdown(lb.aggregate(tmp_path), **REG)
    section = md.split("## lbtest")[1].split("### lbtest: runs")[0]
    assert section.count(tag) == 1
    assert "weights" not in table(md, "lbtest")[0]
    # several pretrained weights: a short key per tag in the column, each tag said once
    other = "hub:vit_base_patch16_224.augreg_in21k@0123456789abcdef"
    for task in LB.tasks:
        write(tmp_path, task=task, method="lora", method_config="{}", weights=other)
    md = lb.render_markdown(lb.aggregate(tmp_path), **REG)
    section = md.split("## lbtest")[1].split("### lbtest: runs")[0]
    assert section.count(tag) == 1 and section.count(other) == 1
    assert f"weights W1 = `{tag}`, W2 = `{other}`" in section
    assert {r["weights"] for r in table(md, "lbtest")} == {"W1", "W2", "random"}


def _two_folders(tmp_path: Path) -> tuple[Path, Path]:
    """``ref`` and ``mine``: the same runs (same run ids), other accuracies in ``mine``."""
    ref, mine = tmp_path / "ref", tmp_path / "mine"
    for folder, acc in ((ref, 0.5), (mine, 0.7)):
        for task in LB.tasks:
            write(folder, task=task, test_top1=acc)
    return ref, mine


def test_several_results_folders_are_kept_apart(tmp_path):
    ref, mine = _two_folders(tmp_path)
    assert {p.name for p in (ref / "runs").iterdir()} == {p.name for p in (mine / "runs").iterdir()}
    rows = lb.aggregate([ref, mine, ref])  # a folder given twice is read once
    assert len(rows) == 4 and {r["results_dir"] for r in rows} == {str(ref), str(mine)}
    md = lb.render_markdown(rows, **REG)
    rows = table(md, "lbtest")
    assert sorted((r["results dir"], r["mean"]) for r in rows) == [
        (str(mine), "70.00"),
        (str(ref), "50.00"),
    ]
    assert [r["method"] for r in status_table(md, "lbtest")][:2] == [
        f"lora · {mine}",
        f"lora · {ref}",
    ]
    out = lb.generate([ref, mine], **REG)
    # the outputs of several folders go into the first one that is not ./results
    assert (out["results_csv"], out["leaderboard"]) == (ref / "results.csv", ref / "leaderboard.md")
    text = out["results_csv"].read_text()
    assert text.startswith("results_dir,run_id,") and len(text.splitlines()) == 5
    lb.generate([ref, mine], tmp_path / "lb.md", **REG)
    assert (tmp_path / "lb.md").read_text().splitlines()[0] == lb.header(
        "ref/runs/*.csv + mine/runs/*.csv"
    )


def test_an_output_path_takes_results_csv_and_plots_with_it(tmp_path, monkeypatch):
    """``--output PATH``: the whole set goes to PATH's folder; the default path changes nothing."""
    ref, mine = _two_folders(tmp_path)
    board = tmp_path / "out" / "board.md"  # a folder that does not exist yet
    out = lb.generate([ref, mine], board, **REG)
    assert (out["results_csv"], out["leaderboard"]) == (tmp_path / "out" / "results.csv", board)
    assert {p.parent for p in out["plots"] + out["plots_pdf"]} == {tmp_path / "out" / "plots"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "board.md",
        "plots",
        "results.csv",
    ]
    assert not (ref / "results.csv").exists() and not (ref / "plots").exists()
    assert not lb.is_stale([ref, mine], board, **REG)
    assert lb.outputs([ref, mine], board).home == tmp_path / "out"
    # the default path, named: the default set (the reference's results.csv stays in results/)
    monkeypatch.chdir(tmp_path)
    assert lb.outputs("results", "leaderboard.md") == lb.outputs("results")
    assert lb.outputs("results", "leaderboard.md").results_csv == Path("results/results.csv")
    assert lb.outputs(mine, mine / "leaderboard.md").home == mine


def test_header_names_the_results_folder_relative_to_the_leaderboard(tmp_path):
    folder = tmp_path / "my-results"
    write(folder, task="lbtest/alpha")
    out = lb.generate(folder, **REG)
    assert out["leaderboard"] == folder / "leaderboard.md"  # inside the folder by default
    assert out["leaderboard"].read_text().splitlines()[0] == lb.header("runs/*.csv")
    lb.generate(folder, tmp_path / "board.md", **REG)
    assert (tmp_path / "board.md").read_text().splitlines()[0] == lb.header("my-results/runs/*.csv")


def test_cli_default_outputs_per_results_folder(tmp_path, monkeypatch):
    """Without --results the user's my-results/ is shown; the reference is rebuilt when named."""
    monkeypatch.chdir(tmp_path)
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pebench.datasets import register_suite
        import report_rows as t
        register_suite(t.LB, t.LB_TASKS)
        from pebench.cli import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    ref, mine = Path("results"), Path("my-results")
    for task in LB.tasks:
        write(ref, task=task, test_top1=0.5)

    def pebench(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120
        )

    def files() -> dict[Path, bytes]:
        return {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    # no my-results/ yet: one line saying how to make it, and the reference is not touched
    before = files()
    for argv in [(), ("--check",)]:
        proc = pebench("leaderboard", *argv)
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert "`pebench run --method NAME`" in proc.stderr and "--results results" in proc.stderr
    assert files() == before
    proc = pebench("leaderboard", "--results", "results")  # named: ./leaderboard.md as always
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == ["results/results.csv", "leaderboard.md"]
    assert all(Path(p).is_file() for p in proc.stdout.splitlines())
    committed = Path("leaderboard.md").read_bytes()
    reference = files()
    for task in LB.tasks:
        write(mine, task=task, test_top1=0.7)
    proc = pebench("leaderboard")  # the user's runs, into their own folder
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == ["my-results/results.csv", "my-results/leaderboard.md"]
    assert {p: b for p, b in files().items() if tmp_path / mine not in p.parents} == reference
    assert (
        by_method(table(Path("my-results/leaderboard.md").read_text(), "lbtest"))["lora"]["mean"]
        == "70.00"
    )
    proc = pebench("leaderboard", "--check")
    assert (proc.returncode, proc.stdout) == (0, "my-results/leaderboard.md is up to date\n")
    proc = pebench("leaderboard", "--results", "my-results")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == ["my-results/results.csv", "my-results/leaderboard.md"]
    assert (mine / "plots" / "lbtest_acc_vs_params.pdf").is_file()
    proc = pebench("leaderboard", "--results", "results", "--results", "my-results")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == ["my-results/results.csv", "my-results/leaderboard.md"]
    assert Path("leaderboard.md").read_bytes() == committed  # never overwritten
    proc = pebench("leaderboard", "--results", "results", "--results", "my-results", "--check")
    assert (proc.returncode, proc.stdout) == (0, "my-results/leaderboard.md is up to date\n")
    proc = pebench("leaderboard", "--results", "my-results", "--output", "out/board.md")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:3] == [
        "out/results.csv",
        "out/board.md",
        "out/plots/lbtest_acc_improvement.png",
    ]
    # a missing folder among several: one line, exit 2, nothing changed
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    proc = pebench("leaderboard", "--results", "results", "--results", "typo")
    assert proc.returncode == 2
    assert proc.stderr.startswith("pebench: error: no results folder typo/runs")
    assert len(proc.stderr.splitlines()) == 1
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_rows_of_one_manifest_that_read_other_arrays_are_refused(tmp_path, capsys):
    """The suite-hijack attack's trace: same task, phase and manifest (so the same run identity
    could be claimed), another data_hash: the rows are not averaged; one line names them."""
    for seed in range(2):
        write(tmp_path, task="lbtest/alpha", seed=seed)
    write(tmp_path, task="lbtest/alpha", seed=2, data_hash="hijacked")
    with pytest.raises(results.ResultsError, match="read different arrays") as info:
        lb.aggregate(tmp_path)
    assert "\n" not in str(info.value) and "lbtest/alpha" in str(info.value)
    from pebench.cli import main

    assert main(["leaderboard", "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "leaderboard.md").exists()


def test_results_csv_writes_formula_like_text_inert(tmp_path):
    """A ``=HYPERLINK(...)`` text cell would run in a spreadsheet: written with a leading ``'``."""
    link = '=HYPERLINK("http://evil.example","click")'
    write(tmp_path, seed=0, git_sha=link)
    write(tmp_path, seed=1, test_top1=math.nan, status="oom", error="-1 bytes left")
    rows = {
        r["seed"]: r for r in csv.DictReader(io.StringIO(lb.results_csv(lb.aggregate(tmp_path))))
    }
    assert rows["0"]["git_sha"] == "'" + link and rows["1"]["error"] == "'-1 bytes left"
    assert rows["0"]["method"] == "lora" and rows["1"]["seed"] == "1"  # plain values untouched
