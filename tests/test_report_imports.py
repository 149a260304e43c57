"""pebench.report imports only what a torch-free machine has, and its modules form no cycle.

Checked statically (every ``import`` statement, function-level ones included), so a lazy import
of the run pipeline or of torch is caught even on a code path no other test reaches.
"""

from __future__ import annotations

import ast
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pebench.report

REPORT = Path(pebench.report.__file__).resolve().parent
#: no pandas: rows are plain dicts from the store to the outputs
ALLOWED_THIRD_PARTY = {"__future__", "numpy", "matplotlib", "scipy"}
#: second name component of the allowed ``pebench`` modules (the results folder: schema,
#: records, the store and its durable writes; what a row's ``checks`` column says)
ALLOWED_PEBENCH = {"report", "results", "record", "store", "fsio", "markers", "datasets",
                   "errors", "selection", "checks_field"}  # fmt: skip


def _imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in ``path`` (``from a import b`` gives ``a.b``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _modules() -> dict[str, set[str]]:
    return {f"pebench.report.{p.stem}": _imports(p) for p in sorted(REPORT.glob("*.py"))}


def test_report_imports_only_allowed_modules():
    stdlib = sys.stdlib_module_names
    for module, names in _modules().items():
        for name in names:
            parts = name.split(".")
            if parts[0] == "pebench":
                # ``from pebench import datasets`` reads as ``pebench`` and ``pebench.datasets``
                ok = len(parts) == 1 or parts[1] in ALLOWED_PEBENCH
            else:
                ok = parts[0] in stdlib or parts[0] in ALLOWED_THIRD_PARTY
            assert ok, f"{module} imports {name}"


def test_report_modules_form_no_cycle():
    modules = _modules()
    graph = {
        module: {name for name in names if name in modules and name != module}
        for module, names in modules.items()
    }
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as err:  # pragma: no cover - the failure message
        raise AssertionError(f"import cycle among report modules: {err.args[1]}") from None
    # the entry point sits on top: no report module imports it
    assert not [m for m, deps in graph.items() if "pebench.report.leaderboard" in deps]
