"""A fake installed distribution, as ``pip install`` leaves one in ``site-packages``.

Putting ``root`` on ``PYTHONPATH`` (or ``sys.path``) installs it: ``importlib.metadata`` finds
the ``.dist-info`` folder and its entry points, Python the modules beside it.
"""

from __future__ import annotations

from pathlib import Path


def install(
    root: Path,
    name: str,
    entry_points: dict[str, str],
    modules: dict[str, str],
    version: str = "0.1",
    group: str = "pebench.methods",
) -> Path:
    """Write distribution ``name`` (entry points ``{name: "module:attr"}``, modules
    ``{module: source}``) into ``root``; returns ``root``."""
    # one folder whatever the version: installing again (a version bump) rewrites it in place
    dist = root / f"{name.replace('-', '_')}-0.1.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    eps = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[{group}]\n{eps}")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(source)
    return root
