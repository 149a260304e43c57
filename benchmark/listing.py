"""``pebench list``: what is registered, as plain dicts, without importing torch where possible.

Built-in methods are described from the checked catalog (``methods/catalog.json``, kept equal to
the live classes by a test), tasks, suites and budgets from their torch-free registries.
Third-party methods registered through the ``pebench.methods`` entry-point group are listed from
their entry-point metadata (name, distribution and version, the ``module:Class`` they point to,
the distribution's summary) without importing them: installing a plugin never makes a listing
import torch. ``--load`` imports them (torch) to show their titles, presets and caps, and
``--peft`` probes the ``peft:<type>`` methods on a tiny ViT.
"""

from __future__ import annotations

from typing import Any

Item = dict[str, Any]

#: the line printed after the method list when third-party methods were listed, not imported
LOAD_HINT = (
    "third-party methods are listed from their entry points without importing them; "
    "`pebench list methods --load` imports them (torch) and shows their titles, presets and caps"
)
#: the line printed after the method list when peft types were not probed
PEFT_HINT = (
    "peft:<type>: Hugging Face peft types; `pebench list methods --peft` probes which ones the "
    "installed peft supports (imports torch and peft)"
)


def _method_item(info: dict[str, Any], origin: str) -> Item:
    item = {
        "name": info["name"],
        "origin": origin,
        "title": info["title"] + (" [RECONSTRUCTION]" if info["reconstruction"] else ""),
        "presets": info["presets"],
        "caps": info["caps"],
    }
    if "expected_num_params" in info:  # the peft bridge says whether a formula exists
        item["params_formula"] = info["expected_num_params"]
    return item


def _unloaded_item(name: str, origin: str, target: str | None, summary: str) -> Item:
    """A third-party method as its entry point describes it (nothing imported)."""
    title = f"{summary} " if summary else ""
    return {
        "name": name,
        "origin": origin,
        "title": f"{title}(plugin, not imported)",
        "entry_point": target,
    }


def methods(peft: bool = False, load: bool = False) -> list[Item]:
    """Every registered method; third-party ones from their entry points unless ``load``.

    Args:
        peft: add the peft types the installed peft supports (imports torch and peft).
        load: import third-party methods to describe them (torch); without it they are listed
            from their entry-point metadata only.
    """
    from pebench.errors import PebenchError
    from pebench.methods import (
        PEFT_PREFIX,
        builtin_catalog,
        get_method_class,
        peft_method_names,
        registry,
    )

    catalog = {info["name"]: info for info in builtin_catalog()}
    items = []
    for name in registry.names():
        origin = registry.origin_of(name)
        if name.startswith(PEFT_PREFIX):
            continue
        if origin != "builtin" and not load and not registry.is_loaded(name):
            target, summary = registry.target_of(name), registry.summary_of(name)
            items.append(_unloaded_item(name, origin, target, summary))
            continue
        try:
            info = catalog.get(name) if origin == "builtin" else None
            items.append(_method_item(info or get_method_class(name).build().describe(), origin))
        except PebenchError as err:  # one broken plugin is shown, never hides the others
            items.append({"name": name, "origin": origin, "title": f"BROKEN: {err}"})
    for name in peft_method_names() if peft else []:
        info = get_method_class(name).build().describe()
        items.append(_method_item(info, registry.origin(name)))
    return items


def method_problems() -> list[str]:
    """Entry points the method registry refused (clashing or unusable names), one line each."""
    from pebench.methods import registry

    registry.names()
    return list(registry.problems)


def tasks(suite: str | None = None) -> list[Item]:
    """Every task (of ``suite`` only, if given)."""
    from pebench.datasets import resolve_tasks
    from pebench.datasets import tasks as all_tasks

    specs = resolve_tasks(suite) if suite else list(all_tasks().values())
    return [
        {
            "name": t.name,
            "group": t.group,
            "classes": t.num_classes,
            "format": t.data_format,
            "version": t.version,
            "aliases": list(t.aliases),
            "description": t.description,
        }
        for t in specs
    ]


def suites() -> list[Item]:
    """Every suite once (aliases skipped), then each refused third-party suite as ``REFUSED``.

    Third-party suites come from the ``pebench.suites`` entry-point group; one that cannot be
    used is listed with why (its problem line), never hiding the others.
    """
    from pebench.datasets import suites as all_suites
    from pebench.datasets.catalog import refused_suites, suite_origin

    unique = {s.name: s for s in all_suites().values()}
    items: list[Item] = [
        {
            "name": s.name,
            "origin": suite_origin(s.name),
            "tasks": len(s.tasks),
            "budget": s.default_budget,
            "aggregate": s.aggregate,
            "description": s.description,
        }
        for s in unique.values()
    ]
    return items + [
        {"name": name, "origin": "refused", "description": f"REFUSED: {line}"}
        for name, line in refused_suites()
    ]


def suite_problems() -> list[str]:
    """Entry points of the ``pebench.suites`` group that were refused, one line each."""
    from pebench.datasets.catalog import suite_problems as problems

    return problems()


def budgets() -> list[Item]:
    """Every built-in budget, with what it is for (``--budget PATH`` reads a user's own)."""
    from pebench.budget import BUDGETS

    return [
        {
            "name": b.id,
            "trials": len(b.trials()),
            "replicates": b.search_replicates,
            "selection": b.selection,
            **({"target": f"{b.precision_target:g} pts"} if b.precision_target else {}),
            "epochs": b.epochs,
            "seeds": list(b.seeds),
            "backbone": b.backbone,
            "weights": b.weights or "pretrained",
            "description": b.description,
            "for": b.purpose,
        }
        for b in BUDGETS.values()
    ]


def format_items(items: list[Item]) -> str:
    """Two lines per item: name and title (or description), then the other fields.

    An item with a ``for`` field (budgets) gets a third line saying what it is for.
    """
    lines = []
    for it in items:
        extra = "  ".join(
            f"{k}={v}" for k, v in it.items() if k not in ("name", "title", "description", "for")
        )
        lines.append(f"{it['name']:<20} {it.get('title') or it.get('description', '')}")
        lines.append(f"{'':<20} {extra}")
        if it.get("for"):
            lines.append(f"{'':<20} for: {it['for']}")
    return "\n".join(lines)


def has_unloaded(items: list[Item]) -> bool:
    """Whether a method listing holds third-party methods that were not imported."""
    return any("entry_point" in it for it in items)


__all__ = [
    "LOAD_HINT",
    "PEFT_HINT",
    "has_unloaded",
    "budgets",
    "format_items",
    "method_problems",
    "methods",
    "suite_problems",
    "suites",
    "tasks",
]
