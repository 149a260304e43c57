"""The dependency rules of the code base, read from the source tree (every import, lazy ones too).

Rules (see ``benchmark/__init__.py``):
- no import cycle anywhere in ``pebench`` (function-local imports included);
- methods import only the plugin contract (and each other);
- the run pipeline never imports sweeping, reporting or the CLI;
- reporting never imports torch, timm, peft or the run pipeline;
- the budget (``budget``, ``budget_types``, ``budget_file``) imports nothing from
  ``pebench.datasets``;
- the contracts never import the layers built on them (run pipeline, sweeping, reporting, CLI);
- only the CLI layer (``pebench.cli`` and the command modules of ``pebench.commands``) imports
  the dispatcher (``pebench.sweep.dispatch``);
- command modules import nothing from each other: inside ``pebench.commands`` only the
  ``_``-prefixed helpers (``_plan``, ``_args``, ...) are imported;
- nothing but ``pebench.cli`` and the commands themselves imports ``pebench.commands``;
- only the run store (``pebench.store``) knows the results folder's layout: no other module
  spells its folder and file names (``runs``, ``logs``, ``checks``, ``stale``, ``replaced``,
  ``.running``, ``.record.json``, ``.ddp/``).

Each rule is a predicate over the import graph, so the same checker is tested on graphs with a
rule broken on purpose: a rule that cannot fail would prove nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: folder -> import name (pyproject's package-dir)
FOLDERS = {"benchmark": "pebench", "methods": "pebench.methods", "datasets": "pebench.datasets"}

CONTRACT = {
    "pebench",
    "pebench.errors",
    "pebench.config",
    "pebench.registry",
    "pebench.method",
    "pebench.vit",
    "pebench.layers",
    "pebench._compat",
}
RUN_PIPELINE = {"pebench.run", "pebench.train", "pebench.data", "pebench.metrics"}
#: the budget: built-in budgets and look-up, its types, budget files
BUDGET = {"pebench.budget", "pebench.budget_types", "pebench.budget_file"}
#: the results folder: rows and records (schema), durable files, markers, the store
STORE = {"pebench.results", "pebench.record", "pebench.fsio", "pebench.markers", "pebench.store"}
CONTRACTS = CONTRACT | STORE | BUDGET
#: the CLI layer: the table of commands and the command package (the only dispatcher users)
CLI = "pebench.cli"
COMMANDS = "pebench.commands"
UPPER = ("pebench.sweep", "pebench.report", CLI, COMMANDS)
HEAVY = ("torch", "timm", "peft")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:]]
    parts[-1] = parts[-1].removesuffix(".py")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Lines inside ``if TYPE_CHECKING:`` blocks (not imported at run time)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> every module it imports (pebench modules by name; others by top-level name)."""
    files = {_module_name(p): p for f in FOLDERS for p in (root / f).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_lines(tree)
        edges: set[str] = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                edges.update(a.name if a.name.startswith("pebench") else a.name.split(".")[0]
                             for a in node.names)  # fmt: skip
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if not node.module.startswith("pebench"):
                    edges.add(node.module.split(".")[0])
                    continue
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    edges.add(sub if sub in files else node.module)
        edges.discard(name)
        graph[name] = edges
    return graph


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _cli_layer(module: str) -> bool:
    return module == CLI or _within(module, COMMANDS)


def _command_helper(module: str) -> bool:
    """A shared helper of the command modules: ``pebench.commands._name``."""
    return module.startswith(COMMANDS + "._")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every broken rule, one line each (empty when the tree follows the rules)."""
    bad = [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    for mod, deps in sorted(graph.items()):
        for dep in sorted(deps):
            if _within(mod, "pebench.methods") and dep.startswith("pebench"):
                if not (dep in CONTRACT or _within(dep, "pebench.methods")):
                    bad.append(f"method plugin {mod} imports {dep} (only the plugin contract)")
            if mod in RUN_PIPELINE and any(_within(dep, u) for u in UPPER):
                bad.append(f"run pipeline {mod} imports {dep}")
            if _within(mod, "pebench.report") and (
                dep in HEAVY or dep in RUN_PIPELINE or _within(dep, "pebench.sweep")
                or dep in (CLI, "pebench.backbones", "pebench.methods")
            ):  # fmt: skip
                bad.append(f"reporting {mod} imports {dep}")
            if mod in BUDGET and _within(dep, "pebench.datasets"):
                bad.append(f"the budget imports {dep}")
            if mod in CONTRACTS and (dep in RUN_PIPELINE or any(_within(dep, u) for u in UPPER)):
                bad.append(f"contract {mod} imports {dep}")
            if dep == "pebench.sweep.dispatch" and not _cli_layer(mod):
                bad.append(f"dispatcher imported by {mod} (only the CLI layer runs sweeps)")
            if _within(dep, COMMANDS) and not _cli_layer(mod):
                bad.append(f"commands imported by {mod}: {dep} (only pebench.cli uses them)")
            if _within(mod, COMMANDS) and _within(dep, COMMANDS) and not _command_helper(dep):
                bad.append(
                    f"command module {mod} imports {dep} (commands share only the _ helpers)"
                )
    return bad


#: the folder names of the results layout (flagged where joined into a path with ``/``), and
#: the suffixes of run files (flagged anywhere)
LAYOUT_NAMES = {"runs", "logs", "checks", "stale", "replaced"}
LAYOUT_SUFFIXES = (".running", ".record.json", ".ddp/", "/runs/")


def layout_strings(source: str) -> list[str]:
    """String constants of ``source`` that spell the results layout (docstrings excluded)."""
    tree = ast.parse(source)
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    joined = {
        id(side)
        for node in ast.walk(tree)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
        for side in (node.left, node.right)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            text = node.value
            if any(c.isspace() for c in text):  # prose (help, messages) may name the layout
                continue
            if (
                (text in LAYOUT_NAMES and id(node) in joined)
                or text.startswith("runs/")
                or any(suffix in text for suffix in LAYOUT_SUFFIXES)
            ):
                found.append(text)
    return found


def layout_violations(root: Path = ROOT) -> list[str]:
    """Modules other than the store that spell the results layout, one line each."""
    bad = []
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            name = _module_name(path)
            if name == "pebench.store":
                continue
            for text in layout_strings(path.read_text(encoding="utf-8")):
                bad.append(f"{name} spells the results layout: {text!r}")
    return bad


def test_only_the_store_knows_the_results_layout():
    assert layout_violations() == []


def test_the_layout_rule_fails_when_broken():
    """A module joining a results path itself is caught; a docstring naming it is not."""
    spelled = 'def f(d):\n    """Rows live in runs/."""\n    return d / "runs" / "x.csv"\n'
    assert layout_strings(spelled) == ["runs"]
    assert layout_strings('def g(rid):\n    return f"{rid}.running"\n') == [".running"]
    assert layout_strings('COLUMN = dict(legend_group="runs")\n') == []  # a label, not a path


def test_the_source_tree_follows_the_dependency_rules():
    graph = import_graph()
    assert "pebench.sweep.dispatch" in graph and "pebench.run" in graph  # the tree was read
    assert {"pebench.commands.run", "pebench.commands._plan"} <= set(graph)
    assert violations(graph) == []


@pytest.mark.parametrize(
    ("module", "dep", "message"),
    [
        ("pebench.run", "pebench.sweep.worker", "import cycle"),  # worker imports run
        ("pebench.methods.lora", "pebench.sweep.plan", "method plugin"),
        ("pebench.train", "pebench.report.leaderboard", "run pipeline"),
        ("pebench.report.leaderboard", "torch", "reporting"),
        ("pebench.report.leaderboard", "pebench.run", "reporting"),
        ("pebench.budget", "pebench.datasets", "the budget imports"),
        ("pebench.budget_types", "pebench.datasets.spec", "the budget imports"),
        ("pebench.budget_file", "pebench.datasets", "the budget imports"),
        ("pebench.results", "pebench.cli", "contract"),
        ("pebench.store", "pebench.sweep.plan", "contract"),
        ("pebench.sweep.plan", "pebench.sweep.dispatch", "dispatcher imported"),
        ("pebench.report.leaderboard", "pebench.sweep.dispatch", "dispatcher imported"),
        ("pebench.commands.compare", "pebench.commands.export", "command module"),
        ("pebench.commands.run", "pebench.commands.status", "command module"),
        ("pebench.commands._plan", "pebench.commands.run", "command module"),
        ("pebench.commands.status", "pebench.commands", "command module"),
        ("pebench.sweep.plan", "pebench.commands._plan", "commands imported"),
        ("pebench.submission.bundle", "pebench.commands._plan", "commands imported"),
        ("pebench.listing", "pebench.commands.list", "commands imported"),
        ("pebench.run", "pebench.commands._args", "run pipeline"),
        ("pebench.store", "pebench.commands._output", "contract"),
    ],
)
def test_each_rule_fails_when_broken(module, dep, message):
    graph = import_graph()
    graph[module] = graph[module] | {dep}
    assert any(line.startswith(message) for line in violations(graph)), violations(graph)


def test_lazy_imports_count():
    """A function-local import is an edge: the old runner <-> worker cycle was one."""
    graph = import_graph()
    assert "pebench.run" in graph["pebench.sweep.worker"]  # imported inside _child
    assert "pebench.supervise" in graph["pebench.sweep.worker"]  # inside _child
    assert "pebench.sweep.ddp" in graph["pebench.supervise"]  # inside _train
