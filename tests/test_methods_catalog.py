"""The committed built-in method catalog: never stale, and readable without torch."""

import json
import subprocess
import sys

from pebench.method_catalog import CATALOG_PATH, catalog_text, live_catalog
from pebench.methods import BUILTIN, builtin_catalog
from pebench.methods.lora import LoRA


def test_committed_catalog_equals_the_live_classes():
    # on failure: python -m pebench.method_catalog, then commit methods/catalog.json
    assert CATALOG_PATH.read_text(encoding="utf-8") == catalog_text()
    assert builtin_catalog() == live_catalog()
    assert sorted(e["name"] for e in builtin_catalog()) == sorted(BUILTIN)
    assert all(e["origin"] == "builtin" for e in builtin_catalog())


def test_a_changed_title_makes_the_catalog_stale(monkeypatch):
    monkeypatch.setattr(LoRA, "title", "LoRA, renamed")
    assert builtin_catalog() != live_catalog()
    assert CATALOG_PATH.read_text(encoding="utf-8") != catalog_text()


def test_catalog_and_names_do_not_import_torch():
    code = (
        "import sys, pebench.methods as m; c = m.builtin_catalog(); n = m.registry.names();"
        "heavy = [k for k in ('torch', 'timm', 'peft') if k in sys.modules];"
        "print(len(c), len(n) >= len(c), heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(len(BUILTIN)), "True", "[]"]


def test_catalog_is_json_with_describe_keys():
    entries = json.loads(CATALOG_PATH.read_text(encoding="utf-8"))
    keys = set(LoRA.build().describe()) | {"origin", "config", "preset_configs", "source"}
    assert all(set(e) == keys for e in entries)
    lora = next(e for e in entries if e["name"] == "lora")
    assert lora["config"] == {"r": "int", "alpha": "float", "dropout": "float",
                              "form": "'qv' | 'noah_qkv'"}  # fmt: skip


def test_every_preset_config_in_the_catalog_is_what_building_it_gives():
    """Planning reads a built-in preset's config from the catalog instead of importing the
    method (#25); it must be the config building it gives, rows' ``method_config`` included."""
    from pebench.method_catalog import catalog_config
    from pebench.methods import build_method, get_method_class

    for entry in builtin_catalog():
        for preset in entry["presets"]:
            built = build_method(entry["name"], {}, preset)
            reconstruction = bool(get_method_class(entry["name"]).reconstruction)
            assert catalog_config(entry["name"], preset) == (built.config_json(), reconstruction)
    assert catalog_config("lora", "nosuch") is None


def test_planning_reads_a_current_catalog_and_builds_past_a_stale_one(monkeypatch, tmp_path):
    """An entry whose ``source`` is not the method file's code (edited since the catalog was
    regenerated) is not used: the method is built."""
    import copy

    import pebench.method_catalog as M
    from pebench.sweep.plan import plan_sweep

    real = M.builtin_catalog()

    def doctored(source):
        entries = copy.deepcopy(real)
        lora = next(e for e in entries if e["name"] == "lora")
        lora["preset_configs"]["default"] = '{"doctored": 1}'
        lora["source"] = source or lora["source"]
        return lambda: entries

    def config():
        sweep = plan_sweep("lora", tasks="demo/shapes", budget="demo-smoke", load_weights=False,
                           checks=False, results_dir=tmp_path)  # fmt: skip
        return sweep.static["method_config"]

    monkeypatch.setattr(M, "builtin_catalog", doctored(None))
    assert config() == '{"doctored": 1}'  # current: read, not built
    monkeypatch.setattr(M, "builtin_catalog", doctored("0" * 16))
    assert config() == LoRA.build().config_json()  # stale: built


def test_a_run_named_from_a_stale_catalog_fails_instead_of_recording_another_config(
    monkeypatch, tmp_path
):
    """The catalog's guard is the method file's hash; a core change can still make an entry
    stale with the file unchanged. A run then builds a config other than the one its row would
    record: it fails, naming the fix, instead of writing an ``ok`` row with the wrong config."""
    import copy

    import pebench.method_catalog as M
    from pebench.sweep.plan import plan_sweep
    from tests.sweeps import run_sweep

    entries = copy.deepcopy(M.builtin_catalog())
    lora = next(e for e in entries if e["name"] == "lora")
    lora["preset_configs"]["default"] = lora["preset_configs"]["default"].replace(
        '"r": 8', '"r": 2'
    )
    monkeypatch.setattr(M, "builtin_catalog", lambda: entries)
    sweep = plan_sweep("lora", tasks="demo/shapes", budget="demo-smoke", checks=False,
                       results_dir=tmp_path, seeds=(0,))  # fmt: skip
    rows = run_sweep(sweep)
    assert rows and all(r["status"] == "failed" for r in rows if r["trial"] != -1)
    search = next(r for r in rows if r["phase"] == "search")
    assert "methods/catalog.json is stale (python -m pebench.method_catalog)" in search["error"]
