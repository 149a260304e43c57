"""Rows are tied to the method's code: ``method_source`` is part of every run's identity (#24.1).

Tried as a user would: run the template plugin, edit its forward without a version bump, then
bump its version. Before ``method_source`` every old row was reused as a current one (the run
identity named the method, its config and pebench's version, never the plugin's code).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pebench import results as R
from pebench.method_source import method_source, source_files, source_hash
from pebench.store import RunStore

PLUGIN = Path(__file__).resolve().parent / "method_plugin"
SMOKE = ["--tasks", "demo/shapes", "--budget", "demo-smoke", "--seeds", "0", "--results", "r"]


def _pebench(root: Path, *argv: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(filter(None, [str(root / "plugin"), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "pebench.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=600)


def _status(root: Path) -> dict:
    out = _pebench(root, "status", "--method", "ia3", *SMOKE, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
def test_an_edited_or_upgraded_plugins_rows_are_not_reused(tmp_path):
    shutil.copytree(PLUGIN, tmp_path / "plugin")
    code = tmp_path / "plugin" / "pebench_ia3" / "__init__.py"
    run = _pebench(tmp_path, "run", "--method", "ia3", *SMOKE, "--quiet")
    assert run.returncode == 0, run.stderr
    first = RunStore(tmp_path / "r").rows()
    assert len(first) == 3 and len({r["method_source"] for r in first}) == 1
    assert _status(tmp_path)["total"]["done"] == 3

    # the author edits the forward (same version 0.1): none of the 3 rows is a current run
    text = code.read_text()
    edited = text.replace("return x * self.factor()", "return self.factor() * x")
    assert edited != text
    code.write_text(edited)
    status = _status(tmp_path)
    assert status["total"]["done"] == 0
    old = first[0]["method_source"]
    assert [(o["source"], o["rows"]) for o in status["other_code"]] == [(old, 3)]
    table = _pebench(tmp_path, "status", "--method", "ia3", *SMOKE).stdout
    assert f"other code: 3 rows of ia3 come from method_source {old}, not the current" in table

    # run again: the 3 runs execute (nothing reused) beside the old rows
    run = _pebench(tmp_path, "run", "--method", "ia3", *SMOKE, "--quiet")
    assert run.returncode == 0, run.stderr
    rows = RunStore(tmp_path / "r").rows()
    assert len(rows) == 6 and len({r["run_id"] for r in rows}) == 6
    new = {r["method_source"] for r in rows} - {old}
    assert len(new) == 1
    # the leaderboard keeps the two versions of the code apart, named by their source
    board = _pebench(tmp_path, "leaderboard", "--results", "r")
    assert board.returncode == 0, board.stderr
    md = (tmp_path / "r" / "leaderboard.md").read_text(encoding="utf-8")
    (cur,) = new
    for src in (old, cur):
        assert f"[code {src[:8]}]" in md and f"ia3 † · code {src[:8]} | 2 | 1 |" in md

    # a version bump alone (METADATA) is new code too
    meta = next((tmp_path / "plugin").glob("*.dist-info")) / "METADATA"
    meta.write_text(meta.read_text().replace("Version: 0.1", "Version: 0.2"))
    status = _status(tmp_path)
    assert status["total"]["done"] == 0
    assert {o["source"] for o in status["other_code"]} == {old, cur}


def test_a_builtin_sources_files_are_its_code_without_docstrings():
    files = source_files("lora")
    assert [name for name, _ in files] == ["pebench.methods.lora"]
    assert b'"""' not in files[0][1] and b"class LoRA" in files[0][1]
    assert source_hash(files) == method_source("lora")
    assert method_source("lora") != method_source("ssf")


def test_method_source_is_part_of_the_run_identity():
    assert "method_source" in R.IDENTITY
    row = {k: "x" for k in R.IDENTITY}
    assert R.run_id(row) != R.run_id(row | {"method_source": "y"})


def test_install_records_do_not_enter_a_plugins_source(tmp_path):
    """The same code installed elsewhere hashes the same (RECORD, INSTALLER, direct_url.json)."""
    code = "from pebench.method_source import method_source; print(method_source('ia3'))"
    hashes = []
    for where, url in (("a", "file:///home/a/src"), ("b", "file:///srv/b/src")):
        root = tmp_path / where
        shutil.copytree(PLUGIN, root)
        info = next(root.glob("*.dist-info"))
        (info / "direct_url.json").write_text(json.dumps({"url": url}))
        (info / "INSTALLER").write_text("pip\n" if where == "a" else "uv\n")
        listed = ["pebench_ia3/__init__.py", f"{info.name}/METADATA", f"{info.name}/INSTALLER",
                  f"{info.name}/direct_url.json", f"{info.name}/RECORD", "../../bin/x"]  # fmt: skip
        (info / "RECORD").write_text("".join(f"{p},,\n" for p in listed))
        env = dict(os.environ, PYTHONPATH=str(root))
        hashes.append(subprocess.check_output([sys.executable, "-c", code], env=env, text=True))
    assert hashes[0] == hashes[1] and len(hashes[0].strip()) == 16
    # and the code itself is hashed: an edited file changes it
    init = tmp_path / "b" / "pebench_ia3" / "__init__.py"
    init.write_text(init.read_text() + "\nX = 1\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "b"))
    assert subprocess.check_output([sys.executable, "-c", code], env=env, text=True) != hashes[0]
