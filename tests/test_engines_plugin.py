"""A fourth executor engine is one file: an ``Engine`` subclass with its flags, checks and jobs.

The built-in engines (``local``, ``slurm``, ``ray``) are the table of
:mod:`pebench.sweep.engines`; a third-party engine is registered under the entry-point group
``pebench.executors`` (``name = module:Class``). The engine here subclasses the local one: same
processes, its own flag (``--tag``) and job ids of its own. It runs a tiny sweep in this process
(registered at run time) and through ``pebench run --executor tagged`` in a subprocess (installed
as a throwaway ``.dist-info`` on ``PYTHONPATH``), and another engine's flag is refused in one line.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pebench.registry import RegistryError
from pebench.run import RunOptions
from pebench.store import RunStore
from pebench.sweep import engines
from pebench.sweep.dispatch import dispatch
from pebench.sweep.engines.base import ExecutorError, Place
from pebench.sweep.plan import plan_sweep

#: the whole new engine: one file
TAGGED = textwrap.dedent('''
    """The ``tagged`` engine: local processes whose rows carry a job id of its own."""

    import threading
    from dataclasses import dataclass
    from typing import ClassVar

    from pebench.sweep.engines.base import ExecutorError, flag
    from pebench.sweep.engines.local import LocalEngine
    from pebench.sweep.executors import LocalExecutor


    class TaggedExecutor(LocalExecutor):
        name = "tagged"


    @dataclass(frozen=True)
    class TaggedEngine(LocalEngine):
        name: ClassVar[str] = "tagged"
        tag: str | None = flag("--tag", help="tagged: must be 'ok' when given")

        def validate(self):
            if self.tag not in (None, "ok"):
                raise ExecutorError(f"--tag must be ok, got {self.tag!r}")
            super().validate()

        def make(self):
            return TaggedExecutor(max_parallel=self.place.max_parallel, device=self.place.device)

        @staticmethod
        def job_info():
            return f"tag-{threading.current_thread().name}", ""
''')
#: two search trials and one final: three runs
SWEEP = dict(
    tasks="demo/shapes",
    budget="demo-smoke",
    weights="random",
    seeds=[0],
    options=RunOptions(threads=1, progress=False),
)


def _load(path: Path):
    spec = importlib.util.spec_from_file_location("pebench_tagged", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    dist = tmp_path / "pebench_tagged-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pebench-tagged\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[pebench.executors]\ntagged = pebench_tagged:TaggedEngine\n"
    )
    (tmp_path / "pebench_tagged.py").write_text(TAGGED)
    return tmp_path


@pytest.fixture
def tagged(plugin):
    engine = _load(plugin / "pebench_tagged.py").TaggedEngine
    engines.registry.register("tagged", engine)
    yield engine
    engines.registry.unregister("tagged")


def test_an_engine_in_one_file_runs_a_sweep(tagged, tmp_path):
    engine = engines.configure("tagged", Place(max_parallel=1), {"tag": "ok"})
    assert isinstance(engine, tagged) and engine.tag == "ok"
    sweep = plan_sweep("linear", results_dir=tmp_path / "r", checks=False, **SWEEP)
    with engine.make() as executor:
        rows = dispatch([sweep], executor)
    assert len(rows) == 3 and {r["status"] for r in rows} == {"ok"}, rows
    assert {r["executor"] for r in rows} == {"tagged"}
    assert all(r["job_id"].startswith("tag-pebench-run") for r in rows)
    assert {r["job_id"] for r in RunStore(tmp_path / "r").rows()} == {r["job_id"] for r in rows}


def test_an_engine_checks_its_own_flags_and_others_are_refused(tagged):
    with pytest.raises(ExecutorError, match="^--tag must be ok, got 'no'$"):
        engines.configure("tagged", Place(), {"tag": "no"})
    with pytest.raises(ExecutorError, match="^--tag applies to --executor tagged only, not local$"):
        engines.configure("local", Place(), {"tag": "ok"})
    with pytest.raises(ExecutorError, match="--partition applies to --executor slurm only"):
        engines.configure("tagged", Place(), {"partition": "gpu"})
    # the local engine's own checks hold for its subclass
    with pytest.raises(ExecutorError, match="do not combine it with --max-parallel"):
        engines.configure("tagged", Place(max_parallel=2), {"runs_per_device": 2})


def test_an_engine_entry_must_be_an_engine_of_its_name():
    with pytest.raises(RegistryError, match="is a builtin_function_or_method, not an Engine"):
        engines.registry.register("x", print)
    with pytest.raises(RegistryError, match="declares name 'local', not 'x'"):
        engines.registry.register("x", engines.registry.get("local"))
    assert "x" not in engines.registry.names()


def _pebench(path: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    pythonpath = os.pathsep.join(filter(None, [str(path), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=pythonpath, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "pebench.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_an_installed_engine_runs_through_pebench_run(plugin, tmp_path):
    helped = _pebench(plugin, "run", "--help", cwd=tmp_path)
    assert "{local,slurm,ray,tagged}" in helped.stdout and "--tag TAG" in helped.stdout
    argv = ["run", "--method", "linear", "--tasks", "demo/shapes", "--budget", "demo-smoke",
            "--weights", "random", "--seeds", "0", "--results", "r", "--quiet",
            "--skip-checks"]  # fmt: skip
    wrong = _pebench(plugin, *argv, "--tag", "ok", cwd=tmp_path)
    assert wrong.returncode == 2 and not (tmp_path / "r").exists()
    assert wrong.stderr.strip().splitlines()[-1] == (
        "pebench: error: --tag applies to --executor tagged only, not local"
    )
    out = _pebench(plugin, *argv, "--executor", "tagged", "--tag", "ok", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = RunStore(tmp_path / "r").rows()
    assert len(rows) == 3 and {r["executor"] for r in rows} == {"tagged"}
    assert all(r["job_id"].startswith("tag-") for r in rows)
