"""LaTeX that fits a page (#28 item 7): two-level headers, best marked, width capped, variants.

Each variant is compiled with pdflatex (skipped where it is not installed) in a plain
``article`` and must not produce an overfull box, for the demo suite and for a synthetic
19-task VTAB-1k table, with the longest method labels of the committed table.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_rows import write

from pebench.datasets import get_suite, get_task
from pebench.errors import UserError
from pebench.report import export
from pebench.report import leaderboard as lb
from pebench.report.latex import VARIANTS

#: the longest labels of the committed demo table, and a few more
LABELS = ["lv_adapter", "adapter_pfeiffer", "vpt_shallow", "kadaptation", "peft:lora", "full"]


def _suite_rows(tmp: Path, suite: str, seeds: int = 2) -> Path:
    """Rows of every method in :data:`LABELS` on every task of ``suite`` (distinct values)."""
    for m, method in enumerate(LABELS):
        for t, task in enumerate(get_suite(suite).tasks):
            spec = get_task(task)
            for seed in range(seeds):
                top1 = 0.3 + 0.6 * ((7 * m + 3 * t + seed) % 23) / 23 + 0.001 * m
                write(tmp, task=task, suite=suite, task_group=spec.group,
                      task_version=spec.version, method=method, method_config="{}",
                      method_reconstruction=method == "lv_adapter", seed=seed,
                      test_top1=round(top1, 4), n_test=None, n_test_correct=None,
                      budget="vtab1k-v2" if suite == "vtab" else "demo-v3")  # fmt: skip
    return tmp


@pytest.fixture(scope="module")
def vtab(tmp_path_factory):
    return lb.aggregate(_suite_rows(tmp_path_factory.mktemp("vtab"), "vtab"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return lb.aggregate(_suite_rows(tmp_path_factory.mktemp("demo"), "demo", seeds=3))


def compile_log(tex: str, tmp_path: Path) -> str:
    """pdflatex's log of ``tex`` in a plain article (skipped when pdflatex is not installed)."""
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed: structure checked, not compiled")
    doc = tmp_path / "paper.tex"
    doc.write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
        "\\begin{document}\n" + tex + "\\end{document}\n"
    )
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    return (tmp_path / "paper.log").read_text(errors="replace")


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("suite", ["demo", "vtab"])
def test_every_variant_compiles_without_an_overfull_box(suite, variant, demo, vtab, tmp_path):
    df = demo if suite == "demo" else vtab
    tex = export.export(df, "latex", variant=variant)
    log = compile_log(tex, tmp_path)
    assert "Overfull \\hbox" not in log, re.findall(r"Overfull \\hbox.*", log)


def test_the_width_is_capped_at_the_line_and_never_enlarged(vtab):
    tex = export.export(vtab, "latex")
    assert "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%" in tex
    assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}}") == 1


def test_a_grouped_suite_has_a_two_level_header(vtab):
    tex = export.export(vtab, "latex")
    header = tex.split("\\toprule\n", 1)[1].split("\\midrule", 1)[0].splitlines()
    groups = " &  & \\multicolumn{7}{c}{Natural} & \\multicolumn{4}{c}{Specialized} & "
    assert header[0].startswith(groups + "\\multicolumn{8}{c}{Structured} & ")
    assert header[1] == "\\cmidrule(lr){3-9} \\cmidrule(lr){10-13} \\cmidrule(lr){14-21}"
    names = header[2].split(" & ")
    assert names[0] == "method" and names[2:4] == ["cifar", "caltech101"]
    assert names[20] == "smallnorb\\_ele" and len(names) == 2 + 19 + 3 + 2 + 3


def test_best_and_second_best_are_marked_per_accuracy_column(demo):
    tex = export.export(demo, "latex")
    body = tex.split("\\midrule\n", 1)[1].split("\\bottomrule", 1)[0]
    rows = [line.removesuffix(" \\\\").split(" & ") for line in body.splitlines()]
    columns = list(zip(*rows, strict=True))
    for j in range(2, 2 + 4 + 2 + 1):  # 4 tasks, 2 group means, the mean
        cells = columns[j]
        assert sum(c.startswith("\\textbf{") for c in cells) == 1, cells
        assert sum(c.startswith("\\underline{") for c in cells) == 1, cells
        values = [float(re.search(r"\d+\.\d+", c)[0]) for c in cells]
        best = next(v for c, v in zip(cells, values, strict=True) if c.startswith("\\textbf"))
        assert best == max(values)
    assert not any("\\textbf" in c for c in columns[1])  # params: not an accuracy column
    assert "Best per accuracy column in bold, second best underlined." in tex


def test_the_narrow_variant_has_group_means_and_no_task_columns(vtab):
    tex = export.export(vtab, "latex", variant="narrow")
    header = tex.split("\\toprule\n", 1)[1].split("\\midrule", 1)[0].strip().splitlines()
    two_lines = "\\shortstack{%s\\\\%s}"
    assert header == [
        f"method & {two_lines % ('params (M)', 'excl. head')} & Natural & Specialized & "
        f"Structured & {two_lines % ('mean of', 'group means')} & 95\\% CI & rank (UB) & tier \\\\"
    ]


def test_a_reconstruction_is_marked_short_and_explained_in_the_caption(vtab):
    tex = export.export(vtab, "latex")
    assert "lv\\_adapter$^\\S$ & " in tex and "(pebench reconstruction)" not in tex
    assert "$^\\S$: pebench's reconstruction (the paper's architecture is not public)." in tex


def test_columns_are_selected_by_key(vtab):
    tex = export.export(vtab, "latex", columns=["means", "tier"])
    assert "method & mean of 19 & \\shortstack{mean of\\\\group means} & tier \\\\" in tex
    with pytest.raises(UserError, match=r"--columns: unknown column 'rnk'; allowed: params, "):
        export.export(vtab, "latex", columns=["rnk"])
    with pytest.raises(UserError, match=r"--variant 'tiny': expected one of full, narrow"):
        export.export(vtab, "latex", variant="tiny")
