"""The template method plugin (``tests/method_plugin``, docs/plugins.md) end to end (#28.1, .2).

``tests/method_plugin`` is an installed distribution: the package ``pebench_ia3`` and its
``.dist-info`` with an ``entry_points.txt`` for the group ``pebench.methods``, as ``pip install``
leaves them in ``site-packages``; putting the folder on ``PYTHONPATH`` installs it for a
subprocess (this process never sees it). The test takes it through what the guide tells an
author to do: list it, ``pebench check`` it, run it on the demo under ``demo-smoke`` and build a
leaderboard from the rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pebench.store import RunStore

PLUGIN = Path(__file__).resolve().parent / "method_plugin"
#: what ``pebench run`` prints nothing heavy for: the probe of tests/test_cli.py
PROBE = (
    "import sys\n"
    "from pebench.cli import main\n"
    "rc = main({argv!r})\n"
    "heavy = sorted(m for m in ('torch', 'timm', 'peft', 'pebench_ia3') if m in sys.modules)\n"
    "print('RC', rc, 'HEAVY', heavy)\n"
)


def plugin_env(**extra: str) -> dict[str, str]:
    """The environment of a process that has the template plugin installed."""
    path = os.pathsep.join(filter(None, [str(PLUGIN), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, HF_HUB_OFFLINE="1", **extra)


def _pebench(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pebench.cli", *argv]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=plugin_env(), cwd=cwd, timeout=600
    )


def test_list_methods_names_the_plugin_from_its_entry_point_without_importing_it():
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=["list", "methods", "--json"])],
        capture_output=True, text=True, env=plugin_env(), timeout=120,
    )  # fmt: skip
    assert out.stdout.rstrip().endswith("RC 0 HEAVY []"), out.stdout + out.stderr
    items = {m["name"]: m for m in json.loads(out.stdout[: out.stdout.rindex("RC 0")])}
    assert items["ia3"] == {
        "name": "ia3",
        "origin": "pebench-ia3==0.1",
        "title": "(IA)^3 for pebench: the template method plugin of docs/plugins.md "
        "(plugin, not imported)",
        "entry_point": "pebench_ia3:IA3",
    }
    assert items["lora"]["origin"] == "builtin"
    text = _pebench("list", "methods")
    assert "pebench list methods --load" in text.stdout, text.stderr


def test_list_methods_load_imports_the_plugin_and_describes_it():
    out = _pebench("list", "methods", "--load", "--json")
    assert out.returncode == 0, out.stderr
    ia3 = next(m for m in json.loads(out.stdout) if m["name"] == "ia3")
    assert ia3["title"].startswith("Few-Shot Parameter-Efficient Fine-Tuning")
    assert ia3["presets"] == ["default", "attn_only"]
    assert ia3["caps"] == {"identity_at_init": True, "mergeable": True,
                           "unfreezes_backbone": False}  # fmt: skip


@pytest.mark.slow
def test_the_template_plugin_passes_check_runs_and_reaches_the_leaderboard(tmp_path):
    check = _pebench("check", "ia3")
    assert check.returncode == 0 and "13 passed, 0 failed" in check.stdout, check.stdout

    argv = ["run", "--method", "ia3", "--tasks", "demo/shapes", "--budget", "demo-smoke",
            "--seeds", "0", "--results", "r", "--quiet"]  # fmt: skip
    run = _pebench(*argv, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = RunStore(tmp_path / "r").rows()
    assert len(rows) == 3 and {r["status"] for r in rows} == {"ok"}
    assert {r["method_origin"] for r in rows} == {"pebench-ia3==0.1"}
    from pebench.sweep.plan import RUN_CHECKS

    assert {r["checks"] for r in rows} == {"passed:" + ",".join(RUN_CHECKS)}
    # demo-smoke's backbone (pebench_vit_test_cls): depth 2, width 64, MLP 256
    assert {r["params_method"] for r in rows} == {2 * (2 * 64 + 256)}
    assert {r["params_inference_extra"] for r in rows} == {0}  # mergeable: nothing deployed

    board = _pebench("leaderboard", "--results", "r", cwd=tmp_path)
    assert board.returncode == 0, board.stderr
    md = (tmp_path / "r" / "leaderboard.md").read_text(encoding="utf-8")
    assert "| ia3 † ‡ |" in md and "unverified" not in md and "checks skipped" not in md  # † random
    # ‡ a third-party plugin, its distribution named (issue 26, 4)
    assert "‡ third-party method plugin" in md and "ia3: pebench-ia3==0.1" in md
