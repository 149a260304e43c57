"""Third-party suites and tasks through the ``pebench.suites`` entry-point group.

``tests/suite_plugin`` is an installed distribution (a package and its ``.dist-info``, as pip
leaves them in ``site-packages``); putting it on ``PYTHONPATH`` installs it for a subprocess.
Its one task reads arrays the test writes into ``--data-dir``.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pebench.store import RunStore
from tests.budgets import budget_toml

PLUGIN = Path(__file__).resolve().parent / "suite_plugin"
TINY = budget_toml(batch_size=16, subset=None, description=None)


def _pebench(*argv, path=PLUGIN, cwd=None):
    pythonpath = os.pathsep.join(filter(None, [str(path), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=pythonpath, HF_HUB_OFFLINE="1")
    if cwd is not None:  # budget files read by the run are remembered there, not in ~/.cache
        env["PEBENCH_CACHE"] = str(Path(cwd) / "cache")
    cmd = [sys.executable, "-m", "pebench.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_an_installed_suite_is_listed_with_its_distribution():
    out = _pebench("list", "suites", "--json")
    assert out.returncode == 0, out.stderr
    suites = {s["name"]: s for s in json.loads(out.stdout)}
    assert suites["toy"]["origin"] == "pebench-toysuite==0.1" and suites["toy"]["tasks"] == 1
    assert suites["vtab"]["origin"] == "builtin"
    tasks = _pebench("list", "tasks", "--suite", "toy", "--json")
    assert [t["name"] for t in json.loads(tasks.stdout)] == ["toy/bars"], tasks.stderr
    everything = [t["name"] for t in json.loads(_pebench("list", "tasks", "--json").stdout)]
    assert "toy/bars" in everything and "demo/shapes" in everything


@pytest.mark.slow
def test_an_installed_suite_runs_end_to_end_under_a_budget_file(tmp_path):
    # the plugin's own data writer, imported by path: this process never sees the plugin
    spec = importlib.util.spec_from_file_location(
        "toysuite_data", PLUGIN / "pebench_toysuite" / "__init__.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_data(tmp_path / "data")
    (tmp_path / "tiny.toml").write_text(TINY)
    argv = ["run", "--method", "linear", "--tasks", "toy", "--budget", "tiny.toml", "--data-dir",
            "data", "--results", "r", "--quiet"]  # fmt: skip
    out = _pebench(*argv, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = RunStore(tmp_path / "r").rows()
    assert sorted(r["phase"] for r in rows) == ["final", "search"]
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    (final,) = [r for r in rows if r["phase"] == "final"]
    assert (final["task"], final["suite"], final["data_format"]) == ("toy/bars", "toy", "npz")
    assert final["budget"].startswith("file:tiny@") and final["data_manifest"]
    assert final["params_head"] == 96 * 2 + 2 and 0 <= final["test_top1"] <= 1
    assert not out.stderr.count("Traceback")


BAD_SUITES = textwrap.dedent("""
    from pebench.datasets import Suite, TaskSpec

    ROLES = {"train": "train", "val": "val", "trainval": "trainval", "test": "test"}


    def _task(suite, name, **kw):
        args = dict(name=f"{suite}/{name}", suite=suite, group="g", num_classes=2, version="1",
                    data_format="npz", splits=ROLES, loader="badsuites:LOADER")
        return TaskSpec(**{**args, **kw})


    def _suite(name, *tasks):
        return Suite(name=name, tasks=tuple(t.name for t in tasks), aggregate="mean",
                     default_budget="demo-smoke")


    def good():
        task = _task("good", "one")
        return _suite("good", task), [task]


    def not_a_suite():
        return 42


    def misnamed():
        task = _task("other", "one")
        return _suite("other", task), [task]


    def clash():
        task = _task("demo", "shapes")
        return _suite("demo", task), [task]


    def bad_roles():
        task = _task("badroles", "one", splits={"train": "train", "test": "test"})
        return _suite("badroles", task), [task]


    def raises():
        raise RuntimeError("the plugin's data folder is not configured")


    def half():
        task = _task("half", "one")
        return _suite("half", task, _task("half", "two")), [task]


    def hijack():
        # at import, rewrite a built-in task to score the finals on the training images
        from dataclasses import replace
        import pebench.datasets.spec as S

        real = S.TASKS["demo/shapes"]
        S.TASKS["demo/shapes"] = replace(real, splits={**real.splits, "test": "train"})
        task = _task("hijack", "one")
        return _suite("hijack", task), [task]


    def selfreg():
        # registers a suite itself, with an id that escapes its folder (was never checked)
        import pebench.datasets.spec as S

        from dataclasses import replace

        task = replace(_task("selfreg", "one"), name="selfreg/../../etc")
        suite = _suite("selfreg", task)
        S.register_suite(suite, [task])
        return suite, [task]


    def badtext():
        task = _task("badtext", "one", group="natural\\n# injected", description="tasks")
        return _suite("badtext", task), [task]


    def texid():
        from dataclasses import replace

        task = replace(_task("texid", "one"), name="texid/<img src=x onerror=alert(1)>")
        return _suite("texid", task), [task]
""")
BAD_EPS = {
    "good": "badsuites:good",
    "broken": "no_such_module:suite",
    "wrongtype": "badsuites:not_a_suite",
    "misnamed": "badsuites:misnamed",
    "demo": "badsuites:clash",
    "badroles": "badsuites:bad_roles",
    "raises": "badsuites:raises",
    "half": "badsuites:half",
    "hijack": "badsuites:hijack",
    "selfreg": "badsuites:selfreg",
    "badtext": "badsuites:badtext",
    "texid": "badsuites:texid",
}


@pytest.fixture
def bad_plugins(tmp_path):
    dist = tmp_path / "pebench_badsuites-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pebench-badsuites\nVersion: 0.3\n")
    eps = "".join(f"{name} = {target}\n" for name, target in BAD_EPS.items())
    (dist / "entry_points.txt").write_text("[pebench.suites]\n" + eps)
    (tmp_path / "badsuites.py").write_text(BAD_SUITES)
    return tmp_path


def test_bad_suite_plugins_are_isolated_and_reported(bad_plugins):
    out = _pebench("list", "suites", "--json", path=bad_plugins)
    assert out.returncode == 0, out.stderr
    items = {s["name"]: s for s in json.loads(out.stdout) if s["origin"] != "refused"}
    refused = {
        s["name"]: s["description"] for s in json.loads(out.stdout) if s["origin"] == "refused"
    }
    assert items["good"]["origin"] == "pebench-badsuites==0.3"
    assert {"demo", "vtab", "fgvc", "fewshot", "video"} <= set(items)
    assert items["demo"]["origin"] == "builtin"  # the clash keeps the built-in
    assert set(refused) == set(BAD_EPS) - {"good"}
    src = "REFUSED: suite entry point '{}' = {} (pebench-badsuites==0.3): "
    expected = {
        "broken": "ModuleNotFoundError: No module named 'no_such_module'",
        "wrongtype": "gave an object of type 'int'; allowed: a zero-argument function returning",
        "misnamed": "gave suite 'other', not 'misnamed'",
        "demo": "duplicate suite name 'demo': clashes with the builtin one, which is kept",
        "badroles": "task 'badroles/one' of suite 'badroles': splits must map exactly the roles",
        "raises": "RuntimeError: the plugin's data folder is not configured",
        "half": "suite 'half' lists tasks ['half/one', 'half/two'] but gives specs for",
        "hijack": "changed the registered task 'demo/shapes' at import",
        "selfreg": "task id 'selfreg/../../etc' of suite 'selfreg' is not usable",
        "badtext": "group 'natural\\n# injected'; allowed: up to 40 letters",
        "texid": "task id 'texid/<img src=x onerror=alert(1)>' of suite 'texid' is not",
    }
    for name, what in expected.items():
        assert refused[name].startswith(src.format(name, BAD_EPS[name])), refused[name]
        assert what in refused[name] and "\n" not in refused[name]
    tasks = [
        t["name"] for t in json.loads(_pebench("list", "tasks", "--json", path=bad_plugins).stdout)
    ]
    assert "good/one" in tasks and not any(t.startswith(("half/", "badroles/")) for t in tasks)
    assert not any(t.startswith(("hijack/", "selfreg", "badtext/", "texid/")) for t in tasks)
    # the hijacked built-in task is the built-in one again: its test split is its test split
    probe = "from pebench.datasets import get_task; print(get_task('demo/shapes').splits['test'])"
    env = dict(os.environ, PYTHONPATH=str(bad_plugins))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "test", out.stderr


def test_running_a_refused_suite_says_why_in_one_line(bad_plugins, tmp_path):
    out = _pebench("run", "--method", "linear", "--tasks", "half", "--results",
                   str(tmp_path / "r"), path=bad_plugins)  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(
        "pebench: error: unknown suite or task 'half': suite entry point 'half' = badsuites:half "
        "(pebench-badsuites==0.3): suite 'half' lists tasks"
    ), out.stderr
    assert not (tmp_path / "r").exists()
