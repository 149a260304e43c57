"""The committed built-in method catalog: never stale, and readable without torch."""

import json
import subprocess
import sys

from pebench.methods import BUILTIN, builtin_catalog
from pebench.methods.catalog import CATALOG_PATH, catalog_text, live_catalog
from pebench.methods.lora import LoRA


def test_committed_catalog_equals_the_live_classes():
    # on failure: python -m pebench.methods.catalog, then commit methods/catalog.json
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
    keys = set(LoRA.build().describe()) | {"origin", "config"}
    assert all(set(e) == keys for e in entries)
    lora = next(e for e in entries if e["name"] == "lora")
    assert lora["config"] == {"r": "int", "alpha": "float", "dropout": "float",
                              "form": "'qv' | 'noah_qkv'"}  # fmt: skip
