"""Registry: lazy built-ins, entry points, duplicates, suggestions."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pebench.errors import PebenchError
from pebench.methods import BUILTIN, MethodRegistry, build_method, registry
from pebench.registry import Registry, RegistryError

THIRD_PARTY = textwrap.dedent('''
    """A third-party method: a zero-init per-block bias on the residual stream."""
    import torch
    from torch import nn
    from pebench.method import Caps, Method
    from pebench.vit import PetlModule, blocks, set_slot


    class StreamBias(PetlModule):
        def __init__(self, dim):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(dim))

        def forward(self, x):
            return x + self.bias


    class ResidualBias(Method):
        name = "residual_bias"
        title = "Residual bias (third-party example)"
        caps = Caps(identity_at_init=True, mergeable=False)

        def attach(self, model):
            for _, blk in blocks(model):
                set_slot(blk, "post", StreamBias(model.embed_dim))
            return model

        def expected_num_params(self, dims):
            return dims.depth * dims.embed_dim
''')


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    dist = tmp_path / "pebench_thirdparty_demo-1.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pebench-thirdparty-demo\nVersion: 1.2\n"
    )
    (dist / "entry_points.txt").write_text(
        "[pebench.methods]\nresidual_bias = thirdparty_mod:ResidualBias\n"
    )
    (tmp_path / "thirdparty_mod.py").write_text(THIRD_PARTY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_unknown_name_suggests_close_matches():
    with pytest.raises(RegistryError) as err:
        registry.get("lorra")
    msg = str(err.value)
    assert "Did you mean 'lora'" in msg and "Available:" in msg and "bitfit" in msg


def test_builtins_are_lazy_and_listed():
    assert set(BUILTIN) <= set(registry.names())
    assert registry.origin("lora") == "builtin"
    assert registry.origin_of("ssf") == "builtin"
    with pytest.raises(RegistryError, match="Did you mean 'ssf'"):
        registry.origin_of("sff")


def test_duplicate_names_raise():
    reg = Registry("method", {"lora": "pebench.methods.lora:LoRA"})
    with pytest.raises(RegistryError, match="duplicate method name 'lora'"):
        reg.register("lora", object)
    reg.register("mine", object)
    with pytest.raises(RegistryError, match="duplicate"):
        reg.register("mine", object)


def test_entry_point_method_registers_and_passes_conformance(third_party):
    from pebench.conformance import run_checks

    reg = Registry("method", BUILTIN, group="pebench.methods")
    assert "residual_bias" in reg.names()
    assert reg.origin("residual_bias") == "pebench-thirdparty-demo==1.2"
    cls = reg.get("residual_bias")
    failed = [(r.name, r.detail) for r in run_checks(cls) if not r.passed]
    assert not failed


def test_bad_entry_points_are_isolated_and_reported(tmp_path, monkeypatch):
    """A clash with a built-in used to disable every method; a dotted name broke `--method all`."""
    dist = tmp_path / "clash-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: clash\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[pebench.methods]\nlora = x:y\nmy.method = x:z\nfine = x:w\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("method", BUILTIN, group="pebench.methods")
    names = reg.names()
    assert "lora" in names and "fine" in names and "my.method" not in names
    assert reg.origin_of("lora") == "builtin"  # the built-in is kept
    assert len(reg.problems) == 2
    assert "duplicate method name 'lora': entry point x:y (clash==0.1)" in reg.problems[0]
    assert "'my.method' = x:z (clash==0.1) is not a usable name" in reg.problems[1]


def test_pebench_check_runs_a_third_party_method(third_party):
    env = dict(os.environ, PYTHONPATH=str(third_party))
    out = subprocess.run(
        [sys.executable, "-m", "pebench.cli", "check", "residual_bias"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 failed" in out.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "pebench.cli", "list", "methods"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert "residual_bias" in listed.stdout and "pebench-thirdparty-demo==1.2" in listed.stdout


def test_build_method_with_preset_syntax():
    m = build_method("lora.noah_qkv", {"r": "4"})
    assert (m.preset, m.config.form, m.config.r) == ("noah_qkv", "noah_qkv", 4)


# ------------------------------------------------------------------ what an entry may name --
BAD_PLUGINS = textwrap.dedent("""
    from pebench.method import Method


    def not_a_method():
        return None


    class NotAMethod:
        name = "plain_class"


    class Misnamed(Method):
        name = "other_name"
""")


@pytest.fixture
def bad_entry_points(tmp_path, monkeypatch):
    dist = tmp_path / "pebench_bad_demo-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pebench-bad-demo\nVersion: 0.3\n")
    (dist / "entry_points.txt").write_text(
        "[pebench.methods]\n"
        "func_method = bad_plugins_mod:not_a_method\n"
        "plain_class = bad_plugins_mod:NotAMethod\n"
        "misnamed = bad_plugins_mod:Misnamed\n"
    )
    (tmp_path / "bad_plugins_mod.py").write_text(BAD_PLUGINS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return MethodRegistry("method", BUILTIN, group="pebench.methods")


def _one_line_error(reg, name) -> str:
    with pytest.raises(RegistryError) as err:
        reg.get(name)
    assert isinstance(err.value, PebenchError)
    msg = str(err.value)
    assert "\n" not in msg
    assert name not in reg._loaded  # never cached: every lookup raises again
    return msg


@pytest.mark.parametrize(
    ("name", "target", "what"),
    [
        ("func_method", "bad_plugins_mod:not_a_method", "is a function, not a Method subclass"),
        ("plain_class", "bad_plugins_mod:NotAMethod", "is a class, not a Method subclass"),
        ("misnamed", "bad_plugins_mod:Misnamed", "declares name 'other_name', not 'misnamed'"),
    ],
)
def test_entry_point_must_name_a_method_subclass_with_its_name(
    bad_entry_points, name, target, what
):
    msg = _one_line_error(bad_entry_points, name)
    assert msg.startswith(f"method entry point {name!r} = {target} (pebench-bad-demo==0.3) ")
    assert what in msg
    assert msg.endswith(f"allowed: a pebench.method.Method subclass whose `name` is {name!r}")
    # listing stays cheap: nothing is loaded (or checked) to list names and origins
    assert name in bad_entry_points.names()
    assert bad_entry_points.origin_of(name) == "pebench-bad-demo==0.3"


def test_builtin_entry_is_checked_too():
    reg = MethodRegistry("method", {"lora": "pebench.methods.ssf:SSF"})
    msg = _one_line_error(reg, "lora")
    assert msg.startswith("builtin method 'lora' = pebench.methods.ssf:SSF declares name 'ssf'")


def test_runtime_registration_is_checked():
    from pebench.methods.lora import LoRA

    reg = MethodRegistry("method", {})
    with pytest.raises(
        RegistryError, match=r"method 'mine' registered at run time as .*helper is a function"
    ):

        @reg.register("mine")
        def helper():
            return None

    with pytest.raises(RegistryError, match="declares name 'lora', not 'my_lora'"):
        reg.register("my_lora", LoRA)
    assert reg.names() == []

    class MyLoRA(LoRA):
        name = "my_lora"

    assert reg.register("my_lora", MyLoRA) is MyLoRA
    assert reg.get("my_lora") is MyLoRA and reg.origin("my_lora") == "runtime"


def test_get_method_class_raises_registry_error_for_a_misnamed_class(monkeypatch):
    from pebench import methods

    monkeypatch.setattr(
        methods, "registry", MethodRegistry("method", {"x": "pebench.methods.lora:LoRA"})
    )
    with pytest.raises(RegistryError, match="builtin method 'x' = pebench.methods.lora:LoRA"):
        methods.get_method_class("x")


def test_one_bad_plugin_never_breaks_listing_or_all(tmp_path):
    """A misnamed class, a clash with a built-in and a dotted name beside a good plugin."""
    dist = tmp_path / "pebench_mixed-0.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pebench-mixed\nVersion: 0.2\n")
    (dist / "entry_points.txt").write_text(
        "[pebench.methods]\nresidual_bias = thirdparty_mod:ResidualBias\n"
        "misnamed = thirdparty_mod:ResidualBias\nlora = thirdparty_mod:ResidualBias\n"
        "my.method = thirdparty_mod:ResidualBias\n"
    )
    (tmp_path / "thirdparty_mod.py").write_text(THIRD_PARTY)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), HF_HUB_OFFLINE="1")

    def pebench(*argv):
        cmd = [sys.executable, "-m", "pebench.cli", *argv]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)

    listed = pebench("list", "methods")  # from entry-point metadata: nothing imported
    assert listed.returncode == 0, listed.stderr
    assert "residual_bias" in listed.stdout and "lv_adapter" in listed.stdout
    assert "misnamed" in listed.stdout and "BROKEN" not in listed.stdout
    loaded = pebench("list", "methods", "--load")  # importing finds the misnamed class
    assert loaded.returncode == 0, loaded.stderr
    assert "BROKEN: method entry point 'misnamed'" in loaded.stdout
    assert "refused duplicate method name 'lora'" in listed.stderr
    assert "refused method entry point 'my.method'" in listed.stderr
    assert "Traceback" not in listed.stderr
    status = pebench("status", "--method", "all", "--tasks", "demo/shapes", "--json")
    assert status.returncode == 0, status.stderr
    methods = {g["method"] for g in json.loads(status.stdout)["groups"]}
    assert "residual_bias" in methods and "lora" in methods and "misnamed" not in methods
    assert "pebench: skipping method entry point 'misnamed'" in status.stderr
