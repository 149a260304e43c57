"""The committed catalog of built-in methods (``catalog.json``) and how to regenerate it.

``pebench list methods`` and the planning of runs already recorded must answer without importing
torch, timm or peft, so the metadata of every built-in method is committed next to the plugins and
read by :func:`pebench.methods.builtin_catalog`: its ``describe()``, ``"origin": "builtin"``, its
config fields, the config of every preset as run rows record it (``"preset_configs"``) and the
:func:`~pebench.method_source.method_source` of the code they were read from (``"source"``: an
entry whose method file changed since is not used, :func:`pebench.methods.catalog_config`).
After changing a built-in method (its code, title, URL, caps or presets), regenerate it::

    python -m pebench.methods.catalog

``tests/test_methods_catalog.py`` fails while the committed file differs from the live classes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CATALOG_PATH = Path(__file__).with_name("catalog.json")


def live_catalog() -> list[dict[str, Any]]:
    """Every built-in method's entry, sorted by name (imports the plugins: torch).

    An entry is ``describe()``, ``"origin": "builtin"``, ``"config"``: field -> type (what
    ``--set`` may name, as error messages show it), ``"preset_configs"``: preset -> its
    ``config_json()``, and ``"source"``: the method's source hash.
    """
    from pebench.config import field_types
    from pebench.method_source import method_source
    from pebench.methods import BUILTIN, get_method_class

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
