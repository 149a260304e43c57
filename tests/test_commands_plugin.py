"""A new ``pebench`` command is one file: a module with ``NAME``, ``add_parser`` and ``main``.

The built-in commands are the table of :mod:`pebench.cli` (name -> module of
:mod:`pebench.commands`); a third-party command is registered under the entry-point group
``pebench.commands`` (``name = module``). The test writes one module and a throwaway
``.dist-info`` naming it, puts the folder on ``PYTHONPATH`` (as ``pip install`` would put them in
``site-packages``) and runs ``pebench hello`` in a subprocess; this process never sees it. Broken
plugin commands are refused in one line each and never disable the others.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from pebench import cli
from pebench.registry import RegistryError

#: the whole new command: one file
HELLO = textwrap.dedent('''
    """``pebench hello``: greets, the smallest command there is."""

    import argparse

    from pebench.errors import UserError

    NAME = "hello"


    def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
        p = subparsers.add_parser(NAME, help="say hello (a plugin command)")
        p.add_argument("--to", default="world", help="whom to greet")
        return p


    def main(args: argparse.Namespace) -> int:
        if not args.to.strip():
            raise UserError("--to: name someone to greet")
        print(f"hello, {args.to}")
        return 0
''')
#: entry points of the throwaway distribution: one good command and broken ones
EPS = {
    "hello": "pebench_hello",
    "broken": "no_such_module",
    "misnamed": "pebench_hello_misnamed",
    "raises": "pebench_hello_raises",
    "run": "pebench_hello",  # clashes with the built-in: the built-in is kept
}


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    dist = tmp_path / "pebench_hello-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pebench-hello\nVersion: 0.1\n")
    eps = "".join(f"{name} = {target}\n" for name, target in EPS.items())
    (dist / "entry_points.txt").write_text("[pebench.commands]\n" + eps)
    (tmp_path / "pebench_hello.py").write_text(HELLO)
    (tmp_path / "pebench_hello_misnamed.py").write_text(HELLO)  # NAME "hello", not "misnamed"
    (tmp_path / "pebench_hello_raises.py").write_text("raise RuntimeError('no config here')\n")
    return tmp_path


def _pebench(path: Path, *argv: str) -> subprocess.CompletedProcess:
    pythonpath = os.pathsep.join(filter(None, [str(path), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=pythonpath, HF_HUB_OFFLINE="1")
    probe = (
        "import sys\n"
        "from pebench.cli import main\n"
        "try:\n"
        f"    rc = main({list(argv)!r})\n"
        "except SystemExit as e:\n"
        "    rc = e.code\n"
        "print('RC', rc, 'TORCH', 'torch' in sys.modules)\n"
    )
    cmd = [sys.executable, "-c", probe]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_an_installed_command_in_one_file_runs(plugin):
    out = _pebench(plugin, "hello", "--to", "pebench")
    assert out.stdout.splitlines() == ["hello, pebench", "RC 0 TORCH False"], out.stderr
    bad = _pebench(plugin, "hello", "--to", " ")  # its UserError goes through the handler
    assert bad.stdout.splitlines() == ["RC 2 TORCH False"]
    assert bad.stderr.splitlines()[-1] == "pebench: error: --to: name someone to greet"
    helped = _pebench(plugin, "--help")
    assert "hello" in helped.stdout and "say hello (a plugin command)" in helped.stdout


def test_broken_plugin_commands_are_refused_one_line_each_and_the_rest_work(plugin):
    out = _pebench(plugin, "list", "budgets")
    assert out.stdout.rstrip().endswith("RC 0 TORCH False") and "demo-v1" in out.stdout
    refused = [line for line in out.stderr.splitlines() if line.startswith("pebench: refused")]
    assert len(refused) == 4, out.stderr
    expected = {
        "'broken'": "could not be loaded from 'no_such_module'",
        "'misnamed'": "has NAME 'hello'; allowed: a module with NAME = 'misnamed'",
        "'raises'": "failed: RuntimeError: no config here",
        "'run'": "duplicate command name 'run'",
    }
    for name, what in expected.items():
        (line,) = [r for r in refused if name in r]
        assert what in line, line
    run_help = _pebench(plugin, "run", "--help")  # the built-in `run` is the one kept
    assert "--executor" in run_help.stdout


def test_a_command_registered_at_run_time_uses_the_same_table(capsys):
    hello = types.ModuleType("hello_at_runtime")
    exec(compile(HELLO, "hello_at_runtime.py", "exec"), hello.__dict__)
    cli.registry.register("hello", hello)
    try:
        assert cli.main(["hello", "--to", "table"]) == 0
        assert capsys.readouterr().out == "hello, table\n"
        assert cli.main(["hello", "--to", ""]) == 2
        assert capsys.readouterr().err == "pebench: error: --to: name someone to greet\n"
    finally:
        cli.registry.unregister("hello")


def _module(**attrs: object) -> types.ModuleType:
    module = types.ModuleType("m")
    module.__dict__.update(attrs)
    return module


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (types.SimpleNamespace(NAME="x", add_parser=print, main=print), "is a SimpleNamespace"),
        (types.ModuleType("m"), "lacks add_parser, main"),
        (_module(add_parser=print, main=print), "has NAME None; allowed: a module with NAME"),
    ],
)
def test_a_command_entry_must_be_a_module_with_the_interface(obj, message):
    with pytest.raises(RegistryError, match=message):
        cli.registry.register("x", obj)
    assert "x" not in cli.registry.names()


def test_every_built_in_command_is_its_own_module_with_the_interface():
    for name, target in cli.BUILTINS.items():
        module = cli.registry.get(name)
        assert module.__name__ == target == f"pebench.commands.{name}"
        assert module.NAME == name and callable(module.add_parser) and callable(module.main)
