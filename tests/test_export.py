"""``pebench export``: LaTeX (booktabs), Markdown and a tidy CSV, grouped as the leaderboard is."""

from __future__ import annotations

import io
import math
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from report_rows import LB, REG, VT, write

from pebench.cli import main
from pebench.report import export
from pebench.report import leaderboard as lb

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
#: the grouping the issue asks for: method config, backbone, weights, budget, data format, task
GROUP = [
    "method",
    "preset",
    "method_config",
    "backbone",
    "weights",
    "budget",
    "data_format",
    "task",
]

committed = pytest.mark.skipif(
    not any((RESULTS / "runs").glob("*.csv")), reason="no committed results yet"
)


def _export(capsys, *argv: str) -> str:
    assert main(["export", *argv]) == 0
    return capsys.readouterr().out


@committed
def test_csv_export_of_the_committed_results_has_one_row_per_group(capsys):
    out = pd.read_csv(io.StringIO(_export(capsys, "--format", "csv", "--results", str(RESULTS))))
    # independently: every final ok row of the committed run files, grouped with pandas
    runs = pd.concat(
        [pd.read_csv(p, keep_default_na=False) for p in sorted((RESULTS / "runs").glob("*.csv"))]
    )
    finals = runs[(runs["phase"] == "final") & (runs["status"] == "ok")].copy()
    finals["top1"] = finals["test_top1"].astype(float) * 100.0
    expect = finals.groupby(GROUP).agg(
        n=("top1", "size"), mean=("top1", "mean"), std=("top1", "std"), lr=("lr", "first")
    )
    out["preset"] = out["preset"].astype(str)
    got = out.set_index(GROUP)
    assert not got.index.duplicated().any()  # exactly one row per group key
    assert sorted(got.index) == sorted(expect.index)
    got = got.loc[expect.index]
    assert (got["n_seeds"].to_numpy() == expect["n"].to_numpy()).all()
    assert got["top1_pct_mean"].to_numpy() == pytest.approx(expect["mean"].to_numpy())
    assert got["top1_pct_std"].to_numpy() == pytest.approx(expect["std"].to_numpy())
    assert got["lr"].to_numpy() == pytest.approx(expect["lr"].astype(float).to_numpy())
    assert set(out["results_dir"]) == {str(RESULTS)}
    assert (out["params_method"] >= 0).all() and (out["params_head"] > 0).all()


def test_csv_export_matches_the_leaderboard_rows(tmp_path):
    for seed, (a, b) in enumerate([(0.80, 0.60), (0.82, 0.62), (0.84, 0.70)]):
        write(tmp_path, task="lbtest/alpha", seed=seed, test_top1=a)
        write(tmp_path, task="lbtest/beta", seed=seed, test_top1=b)
    write(tmp_path, phase="search", trial=0, test_top1=0.99, val_top1=0.99)
    write(tmp_path, seed=3, test_top1=math.nan, status="oom")  # not ok: not exported
    write(tmp_path, method="linear", method_config="{}", params_method=0, test_top1=0.9)
    tidy = export.tidy(lb.aggregate(tmp_path), **REG)
    assert all(list(r) == list(export.TIDY_COLUMNS) for r in tidy)
    rows = {(r["label"], r["task"]): SimpleNamespace(**r) for r in tidy}
    assert sorted(rows) == [
        ("linear", "lbtest/alpha"),
        ("lora", "lbtest/alpha"),
        ("lora", "lbtest/beta"),
    ]
    alpha = rows[("lora", "lbtest/alpha")]
    assert (alpha.n_seeds, alpha.seeds) == (3, "0 1 2")
    assert alpha.top1_pct_mean == pytest.approx(82.0) and alpha.top1_pct_std == pytest.approx(2.0)
    assert math.isnan(rows[("linear", "lbtest/alpha")].top1_pct_std)  # one seed
    assert alpha.lr == 0.001 and alpha.params_method == 294912 and alpha.peak_mem_kind == "cpu_rss"


def _tabulars(tex: str) -> list[tuple[str, list[str]]]:
    """``(column spec, body lines)`` of every tabular."""
    out = []
    pattern = r"\\begin\{tabular\}\{([^}]*)\}\n(.*?)\\end\{tabular\}"
    for spec, body in re.findall(pattern, tex, re.S):
        out.append((spec, body.splitlines()))
    return out


def _compile(tex: str, tmp_path: Path) -> None:
    """Compile ``tex`` in a minimal document with pdflatex (skipped when not installed)."""
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed: structure checked, not compiled")
    doc = tmp_path / "table.tex"
    doc.write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
        "\\begin{document}\n" + tex + "\\end{document}\n"
    )
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "table.pdf").stat().st_size > 1000


def test_latex_structure_and_escaping(tmp_path):
    for task in LB.tasks:
        write(tmp_path, task=task, method="my_method&co", method_config="{}", test_top1=0.5)
        write(tmp_path, task=task, method="lora", weights="random", test_top1=0.25)
    for task in VT.tasks:
        write(tmp_path, task=task, method="100%_$#", method_config="{}", test_top1=0.5)
    tex = export.export(lb.aggregate(tmp_path), "latex", **REG)
    tables = _tabulars(tex)
    assert len(tables) == 2  # one per suite
    for spec, body in tables:
        assert body.count("\\toprule") == 1 and body.count("\\bottomrule") == 1
        assert body.count("\\midrule") == 1
        rows = [line for line in body if line.endswith("\\\\")]
        for line in rows:  # header and data rows: as many cells as the column spec says
            cells = re.split(r"(?<!\\)&", line)
            spans = [re.search(r"\\multicolumn\{(\d+)\}", c) for c in cells]
            assert sum(int(m[1]) if m else 1 for m in spans) == len(spec), line
    # method | params, 2 tasks, mean, its 95% CI, rank (UB), tier
    assert tables[0][0] == "l" + "r" * (1 + 2 + 1 + 3)
    assert tables[1][0] == "l" + "r" * (1 + 4 + 3 + 2 + 3)  # 4 tasks, 3 groups, 2 means
    assert "my\\_method\\&co" in tex and "100\\%\\_\\$\\#" in tex
    assert "lora $^\\dagger$" in tex and "$\\pm$" not in tex.split("\\caption")[0]
    assert not re.search(r"[^\x00-\x7f]", tex), "non-ASCII left in the LaTeX"
    assert (
        "Natural & Specialized & Structured & mean of 4 & \\shortstack{mean of\\\\group means}"
        in tex
    )
    _compile(tex, tmp_path)


def test_latex_keeps_row_fields_on_one_line_and_gives_the_leaderboard_notes(tmp_path):
    """A line break in a caption field ended a paragraph in \\caption: pdflatex refused."""
    for task in LB.tasks:
        write(tmp_path, task=task, backbone="vit\n\ntiny\r\n%x", test_top1=0.5)
    write(tmp_path, task="lbtest/gamma\nsecret", backbone="vit\n\ntiny\r\n%x", test_top1=0.5)
    tex = export.export(lb.aggregate(tmp_path), "latex", **REG)
    assert "backbone vit tiny \\%x;" in tex
    assert tex.splitlines()[2] == (
        f"% Note ({LB.name}): Final rows for tasks outside the suite definition are not shown: "
        "`lbtest/gamma secret`."
    )
    assert len(_tabulars(tex)) == 1
    _compile(tex, tmp_path)


@committed
def test_latex_export_of_the_committed_results(capsys, tmp_path):
    tex = _export(capsys, "--format", "latex")
    tabulars = _tabulars(tex)
    assert len(tabulars) == 2  # the demo table (demo-v4) and the reference table (demo-ref-v2)
    for spec, body in tabulars:
        header = next(line for line in body if line.startswith("method &"))
        assert len(header.split(" & ")) == len(spec)
        assert "\\toprule" in body and "\\midrule" in body and "\\bottomrule" in body
    assert "arc\\_att" in tex and "$\\pm$" in tex
    _compile(tex, tmp_path)


def test_markdown_export(tmp_path):
    for task in LB.tasks:
        write(tmp_path, task=task, method="a|b", method_config="{}", test_top1=0.5)
    md = export.export(lb.aggregate(tmp_path), "markdown", **REG)
    lines = md.splitlines()
    assert "## lbtest" in lines
    head = "| method | params (M) excl. head | alpha | beta | mean | 95% CI | rank (UB) | tier |"
    assert head in lines
    # one seed per task: no interval, and no claim (°)
    assert "| a\\|b | 0.29 | 50.0 | 50.0 | 50.00 | — | (1)° | (1)° |" in lines


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--format", "docx"], "--format 'docx': expected one of latex, markdown, csv"),
        (["--format", "csv", "--results", "nowhere"], "no results folder nowhere/runs"),
        (["--format", "csv", "--output", "no/dir/t.csv"], "--output no/dir/t.csv: folder no/dir"),
    ],
)
def test_export_bad_input_is_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "runs").mkdir(parents=True)
    assert main(["export", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert captured.err.startswith(f"pebench: error: {message}")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["results", "runs"]


def test_export_to_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "results", task="zzz/one", suite="zzz")
    assert main(["export", "--format", "csv", "--output", "t.csv"]) == 0
    assert capsys.readouterr().out == "t.csv\n"
    assert pd.read_csv(tmp_path / "t.csv")["task"].tolist() == ["zzz/one"]


def test_csv_export_writes_formula_like_text_inert(tmp_path):
    """The tidy CSV opens in spreadsheets too: a formula-like text cell gets a leading ``'``."""
    write(tmp_path, task="lbtest/alpha", seed=0, preset="@SUM(A1)", test_top1=0.5)
    got = pd.read_csv(io.StringIO(export.to_csv(lb.aggregate(tmp_path), **REG)))
    assert list(got["preset"]) == ["'@SUM(A1)"] and list(got["task"]) == ["lbtest/alpha"]
    assert list(got["top1_pct_mean"]) == [50.0]
