"""Plugins that try to escape the contract, installed through the ``pebench.methods`` group.

Each hostile method does one thing the core must not miss: keep learned state in a buffer (2
"parameters" reported), adapt to the statistics of its evaluation batch, flip ``requires_grad``
of a backbone tensor in ``forward``, or update a frozen backbone tensor in place. ``pebench run``
refuses each before anything runs (its conformance checks), and with ``--skip-checks`` the run
itself fails every one it can observe, naming what the plugin did.
"""

import os
import subprocess
import sys
import textwrap

import pytest
from fakedist import install

from pebench.store import RunStore

HOSTILE = textwrap.dedent('''
    import torch
    from torch import nn
    from pebench.method import Caps, Method
    from pebench.vit import PetlModule, blocks, set_slot


    class Bias(PetlModule):
        def __init__(self, dim):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(dim))

        def forward(self, x):
            return x + self.bias


    def first_block(model):
        return next(iter(blocks(model)))[1]


    class _Base(Method):
        title = "A hostile plugin (test)"
        caps = Caps(identity_at_init=False)

        def attach(self, model):
            set_slot(first_block(model), "post", self.module(model))
            return model

        def expected_num_params(self, dims):
            return dims.embed_dim


    class Memory(Bias):
        """Learns a running memory of features in a buffer the core does not count."""

        def __init__(self, dim):
            super().__init__(dim)
            self.register_buffer("memory", torch.zeros(64, dim))

        def forward(self, x):
            if self.training:
                with torch.no_grad():
                    self.memory.mul_(0.9).add_(0.1 * x.mean((0, 1)))
            return x + self.bias + self.memory.mean(0)


    class LearnedBuffer(_Base):
        name = "hostile_buffer"

        def module(self, model):
            return Memory(model.embed_dim)


    class BatchStats(Bias):
        """Test-time adaptation: centres features on its evaluation batch when it is large."""

        def forward(self, x):
            if not self.training and x.shape[0] >= 16:
                x = x - x.mean(0, keepdim=True)
            return x + self.bias


    class AdaptsToBatch(_Base):
        name = "hostile_tta"

        def module(self, model):
            return BatchStats(model.embed_dim)


    class Flip(Bias):
        def __init__(self, dim, victim):
            super().__init__(dim)
            self.victim = [victim]  # a plain list: not a submodule, not a parameter

        def forward(self, x):
            self.victim[0].requires_grad_(True)
            return x + self.bias


    class FlipsGrad(_Base):
        name = "hostile_flip"

        def module(self, model):
            return Flip(model.embed_dim, first_block(model).norm1.weight)


    class Drift(Flip):
        def forward(self, x):
            if self.training:
                with torch.no_grad():
                    self.victim[0].add_(1e-3)
            return x + self.bias


    class UpdatesBackbone(_Base):
        name = "hostile_inplace"

        def module(self, model):
            return Drift(model.embed_dim, first_block(model).norm1.weight)
''')
NAMES = {
    "hostile_buffer": "LearnedBuffer",
    "hostile_tta": "AdaptsToBatch",
    "hostile_flip": "FlipsGrad",
    "hostile_inplace": "UpdatesBackbone",
}
SMOKE = ["--tasks", "demo/shapes", "--budget", "demo-smoke", "--weights", "random", "--seeds", "0"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fake installed distribution whose entry points name the hostile methods."""
    root = tmp_path_factory.mktemp("hostile")
    eps = {n: f"hostile_mod:{cls}" for n, cls in NAMES.items()}
    return install(root, "pebench-hostile", eps, {"hostile_mod": HOSTILE})


def _pebench(installed, *argv):
    env = dict(os.environ, PYTHONPATH=str(installed), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "pebench.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "what"),
    [
        ("hostile_buffer", "training_step: AssertionError: cls: buffers changed during training"),
        ("hostile_tta", "per_sample_independence: AssertionError: cls: outputs depend on"),
        ("hostile_flip", "training_step"),
        ("hostile_inplace", "training_step"),
    ],
)
def test_pebench_run_refuses_a_hostile_plugin_before_anything_runs(
    installed, tmp_path, method, what
):
    out = _pebench(installed, "run", "--method", method, *SMOKE, "--results", str(tmp_path))
    assert out.returncode == 2, out.stdout + out.stderr
    err = out.stderr.strip().splitlines()
    assert err[-1].startswith(f"pebench: error: method {method!r} fails the conformance checks")
    assert what in err[-1]
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing was written


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "what"),
    [
        (
            "hostile_buffer",
            "changed buffers during the run: ['blocks.0.post.memory'] (4,096 values",
        ),
        ("hostile_flip", "changed requires_grad of ['blocks.0.norm1.weight']"),
        ("hostile_inplace", "changed frozen tensors in place: ['blocks.0.norm1.weight']"),
    ],
)
def test_with_checks_skipped_the_run_fails_naming_what_the_plugin_did(
    installed, tmp_path, method, what
):
    out = _pebench(
        installed, "run", "--method", method, *SMOKE, "--results", str(tmp_path), "--skip-checks"
    )
    assert out.returncode == 1, out.stdout + out.stderr
    rows = RunStore(tmp_path).rows()
    search = [r for r in rows if r["phase"] == "search"]
    assert search and all(r["status"] == "failed" and what in r["error"] for r in search)
    assert all(r["checks"] == "skipped" for r in rows)
    assert not [r for r in rows if r["status"] == "ok"]


@pytest.mark.slow
def test_a_passing_check_is_remembered_per_method_and_version(installed, tmp_path):
    from pebench.sweep import plan

    out = _pebench(installed, "run", "--method", "linear", *SMOKE, "--results", str(tmp_path))
    assert out.returncode == 0, out.stderr
    rows = RunStore(tmp_path).rows()
    assert len(rows) == 3 and {r["checks"] for r in rows} == {"passed:" + ",".join(plan.RUN_CHECKS)}
    memo = (tmp_path / "checks" / "linear.json").read_text()
    assert '"origin": "builtin"' in memo and all(c in memo for c in plan.RUN_CHECKS)
