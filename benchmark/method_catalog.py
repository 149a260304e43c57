"""The committed catalog of built-in methods (``catalog.json``) and how to regenerate it.

``pebench list methods`` and the planning of runs already recorded must answer without importing
torch, timm or peft, so the metadata of every built-in method is committed next to the plugins and
read by :func:`pebench.methods.builtin_catalog`: its ``describe()``, ``"origin": "builtin"``, its
config fields, the config of every preset as run rows record it (``"preset_configs"``) and the
:func:`~pebench.method_source.method_source` of the code they were read from (``"source"``: an
entry whose method file changed since is not used: :func:`catalog_config`).
After changing a built-in method (its code, title, URL, caps or presets), regenerate it::

    python -m pebench.method_catalog

``tests/test_methods_catalog.py`` fails while the committed file differs from the live classes.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from pebench.config import field_types
from pebench.method_source import method_source
from pebench.methods import BUILTIN, PEFT_PREFIX, builtin_catalog, get_method_class, registry

#: the committed file, package data of ``pebench.methods``
CATALOG_PATH = Path(str(resources.files("pebench.methods").joinpath("catalog.json")))


def live_catalog() -> list[dict[str, Any]]:
    """Every built-in method's entry, sorted by name (imports the plugins: torch).

    An entry is ``describe()``, ``"origin": "builtin"``, ``"config"``: field -> type (what
    ``--set`` may name, as error messages show it), ``"preset_configs"``: preset -> its
    ``config_json()``, and ``"source"``: the method's source hash.
    """

    def entry(name: str) -> dict[str, Any]:
        cls = get_method_class(name)
        described = cls.build().describe()
        return described | {
            "origin": "builtin",
            "config": field_types(cls.Config),
            "preset_configs": {p: cls.build(p).config_json() for p in described["presets"]},
            "source": method_source(name),
        }

    return [entry(name) for name in sorted(BUILTIN)]


def catalog_config(name: str, preset: str) -> tuple[str, bool] | None:
    """``(config_json, reconstruction)`` of a built-in method's preset, read from the catalog.

    What building the method gives without overrides, without importing it (torch, timm):
    planning runs that are all recorded stays cheap. ``None`` when ``name`` is not a built-in,
    the preset is unknown, or the entry's ``source`` is not the method's current
    :func:`~pebench.method_source.method_source` (its file was edited since the catalog was
    regenerated): the caller then builds the method.
    """
    if name.startswith(PEFT_PREFIX) or registry.origin_of(name) != "builtin":
        return None
    entry = next((e for e in builtin_catalog() if e["name"] == name), None)
    if entry is None or preset not in entry.get("preset_configs", {}):
        return None
    if entry.get("source") != method_source(name):
        return None
    return entry["preset_configs"][preset], bool(entry["reconstruction"])


def catalog_text(entries: list[dict[str, Any]] | None = None) -> str:
    """The canonical JSON text of ``entries`` (default: :func:`live_catalog`)."""
    entries = live_catalog() if entries is None else entries
    return json.dumps(entries, indent=2, ensure_ascii=False) + "\n"


def write_catalog(path: Path = CATALOG_PATH) -> Path:
    """Write :func:`catalog_text` to ``path`` (default: the committed ``catalog.json``)."""
    path.write_text(catalog_text(), encoding="utf-8")
    return path


def main() -> None:
    """Regenerate the committed catalog and say where it went."""
    path = write_catalog()
    print(f"wrote {len(json.loads(path.read_text(encoding='utf-8')))} methods to {path}")


if __name__ == "__main__":
    main()
