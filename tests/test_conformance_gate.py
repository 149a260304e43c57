"""The gate of ``pebench run`` on plugins that pass its checks and cheat in their runs (#26.2).

Each hostile method is honest exactly where the old gate looked and adapts to its evaluation
batch everywhere else: while ``pebench.conformance`` (or a ``check_*`` function) is on the stack,
under its default config (it cheats with ``--set cheat=true``), or on evaluation batches of up to
32. An edited plugin (same version) and a forged memo must not be let through either. Each is
refused by ``pebench run`` in one line naming the method, the failing check and the seed.
Installed as a fake distribution with entry points (the pattern of ``test_hostile_plugins.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from fakedist import install

import pebench
from pebench.sweep import plan

COMMON = textwrap.dedent('''
    import sys
    from dataclasses import dataclass

    import torch
    from torch import nn
    from pebench.method import Caps, Method
    from pebench.vit import PetlModule, blocks, set_slot


    def seen_by_checks():
        """Whether this process looks like the old gate's: checks named on the stack or loaded."""
        if "pebench.conformance" in sys.modules:
            return True
        frame = sys._getframe()
        while frame is not None:
            module = str(frame.f_globals.get("__name__", ""))
            name = frame.f_code.co_name
            if "conformance" in module or "conformance" in frame.f_code.co_filename:
                return True
            if name.startswith("check_") or "pytest" in module:
                return True
            frame = frame.f_back
        return False


    class Adapts(PetlModule):
        """Centres features on the evaluation batch when ``cheat(batch size)`` says so."""

        def __init__(self, dim, cheat):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(dim))
            self.cheat = cheat

        def forward(self, x):
            if not self.training and self.cheat(x.shape[0]):
                x = x - x.mean(0, keepdim=True)
            return x + self.bias


    class _Base(Method):
        title = "A plugin that cheats where the checks do not look (test)"
        caps = Caps(identity_at_init=False)

        def cheats(self, batch):
            return batch >= 2

        def attach(self, model):
            block = next(iter(blocks(model)))[1]
            set_slot(block, "post", Adapts(model.embed_dim, self.cheats))
            return model

        def expected_num_params(self, dims):
            return dims.embed_dim


    class StackShy(_Base):
        name = "gate_stack_shy"

        def cheats(self, batch):
            return batch >= 2 and not seen_by_checks()


    class ConfigCheat(_Base):
        name = "gate_config_cheat"

        @dataclass(frozen=True)
        class Config(Method.Config):
            cheat: bool = False

        def cheats(self, batch):
            return self.config.cheat and batch >= 2


    class BigBatch(_Base):
        name = "gate_big_batch"

        def cheats(self, batch):
            return batch > 32


    class Always(_Base):
        name = "gate_always"


    class Honest(_Base):
        name = "gate_edited"

        def cheats(self, batch):
            return False
''')
NAMES = {
    "gate_stack_shy": "StackShy",
    "gate_config_cheat": "ConfigCheat",
    "gate_big_batch": "BigBatch",
    "gate_always": "Always",
    "gate_edited": "Honest",
}
SMOKE = ["--tasks", "demo/shapes", "--budget", "demo-smoke", "--weights", "random", "--seeds", "0"]


def _install(root, source=COMMON, version="0.1"):
    """A fake installed distribution ``pebench-gate`` whose entry points name the methods."""
    eps = {n: f"gate_mod:{cls}" for n, cls in NAMES.items()}
    return install(root, "pebench-gate", eps, {"gate_mod": source}, version=version)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    return _install(tmp_path_factory.mktemp("gate"))


def _env(installed):
    """The environment of a pebench process that sees the fake distribution."""
    path = os.pathsep.join(p for p in (str(installed), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, HF_HUB_OFFLINE="1")


def _pebench(installed, *argv):
    env = _env(installed)
    cmd = [sys.executable, "-m", "pebench.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _refused(out, method, check="per_sample_independence"):
    """``pebench run`` exited 2 with one line naming ``method``, ``check`` and the seed."""
    assert out.returncode == 2, out.stdout + out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith(f"pebench: error: method {method!r} fails the conformance checks")
    assert f"{check}: AssertionError:" in line and "checks seed " in line, line
    return line


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("gate_stack_shy", ()),  # honest while the checks are named on the stack
        ("gate_config_cheat", ("--set", "cheat=true")),  # honest under its default config
        ("gate_big_batch", ()),  # honest on evaluation batches of up to 32
    ],
)
def test_a_plugin_honest_only_where_the_checks_look_is_refused(installed, tmp_path, method, extra):
    out = _pebench(installed, "run", "--method", method, *extra, *SMOKE, "--results", tmp_path)
    _refused(out, method)
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing was written


@pytest.mark.slow
def test_an_edited_plugin_is_checked_again_without_a_version_bump(tmp_path):
    (tmp_path / "plugin").mkdir()
    plugin = _install(tmp_path / "plugin")
    results = tmp_path / "results"
    out = _pebench(plugin, "run", "--method", "gate_edited", *SMOKE, "--results", results)
    assert out.returncode == 0, out.stderr
    memo = (results / "checks" / "gate_edited.json").read_text()
    assert '"origin": "pebench-gate==0.1"' in memo
    # the author edits the plugin (it now adapts to its evaluation batch), same version 0.1
    edited = COMMON.replace("batch):\n        return False", "batch):\n        return batch >= 2")
    assert edited != COMMON
    _install(plugin, edited)
    out = _pebench(plugin, "run", "--method", "gate_edited", *SMOKE, "--results", results)
    _refused(out, "gate_edited")


def _old_memo(name):
    """The memo the old gate wrote (method, origin, pebench version, checks)."""
    return {
        "method": name,
        "origin": "pebench-gate==0.1",
        "pebench": pebench.__version__,
        "checks": list(plan.RUN_CHECKS),
    }


@pytest.mark.slow
@pytest.mark.parametrize("forged", ["old format", "another source"])
def test_a_forged_memo_does_not_let_a_failing_method_run(installed, tmp_path, forged):
    memo = tmp_path / "checks" / "gate_always.json"
    memo.parent.mkdir(parents=True)
    if forged == "old format":
        memo.write_text(json.dumps(_old_memo("gate_always")))
    else:
        env = _env(installed)
        code = (
            "import json; from pebench.sweep import gate; "
            "print(json.dumps(gate.memo_key('gate_always', eval_batch=32)))"
        )
        key = json.loads(subprocess.check_output([sys.executable, "-c", code], env=env))
        memo.write_text(json.dumps({"passes": [key | {"source": "0" * 16}]}))
    out = _pebench(installed, "run", "--method", "gate_always", *SMOKE, "--results", tmp_path)
    _refused(out, "gate_always")
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------- fast unit tests --
def test_the_memo_is_keyed_by_source_config_and_evaluation_batch():
    from pebench.method_source import method_source
    from pebench.sweep import gate

    key = gate.memo_key("lora", "default", {"r": 8}, 64)
    assert key["source"] == method_source("lora") and len(key["source"]) == 16
    assert key["overrides"] == {"r": "8"} and key["eval_batch"] == 64
    assert key != gate.memo_key("lora", "default", {"r": 4}, 64)
    assert key != gate.memo_key("lora", "default", {"r": 8}, 32)
    assert key["checks"] == list(gate.RUN_CHECKS) and key["origin"] == "builtin"


def test_a_docstring_edit_does_not_change_a_builtin_source_hash():
    from pebench.method_source import code_without_docstrings

    code = 'def f(x):\n    """Doc."""\n    return x  # comment\n'
    same = 'def f(x):\n    """Another doc."""\n    return x\n'
    assert code_without_docstrings(code) == code_without_docstrings(same)
    assert code_without_docstrings(code) != code_without_docstrings(
        code.replace("return x", "return -x")
    )


def test_a_plugins_source_hash_follows_its_files(tmp_path):
    plugin = _install(tmp_path)
    code = "from pebench.method_source import method_source; print(method_source('gate_always'))"
    env = _env(plugin)
    first = subprocess.check_output([sys.executable, "-c", code], env=env, text=True)
    _install(plugin, COMMON + "\n# edited\n")
    second = subprocess.check_output([sys.executable, "-c", code], env=env, text=True)
    assert first.strip() != second.strip() and len(first.strip()) == 16
