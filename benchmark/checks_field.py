"""What a run row's ``checks`` column says: which conformance checks its method passed.

``pebench run`` runs the conformance suite before a method's first run (the gate,
:data:`pebench.sweep.plan.RUN_CHECKS`) and every row records the outcome:

* ``passed:<name>,<name>,...``: the checks the method passed before the run, by name;
* ``skipped``: ``--skip-checks``: no check ran;
* ``passed`` (rows written before the names were recorded): the six checks the gate ran then,
  :data:`LEGACY_CHECKS`; ``param_count`` and ``merge`` were not among them; empty (rows from
  before the gate): no record.

The leaderboard calls no row conformant that did not pass the checks its numbers and claims rest
on (:data:`CLAIM_CHECKS`: the closed-form parameter count behind the params column, the merge
equivalence behind a zero inference cost); :func:`unverified` names the missing ones. Methods
shipped with pebench (built-in and ``peft:*``) pass every check in the project's own test suite
(``tests/test_conformance.py``, ``tests/test_peft_bridge.py``), so their legacy rows stand.
Torch-free: the report reads it.
"""

from __future__ import annotations

from collections.abc import Sequence

SKIPPED = "skipped"
#: the value rows had before they named their checks
LEGACY_PASSED = "passed"
PREFIX = "passed:"
#: what the gate ran when rows said only ``passed``
LEGACY_CHECKS = (
    "registration",
    "timm_api",
    "trainable_set",
    "training_step",
    "per_sample_independence",
    "measurable",
)
#: the checks a leaderboard row's numbers and claims rest on, with what they stand for
CLAIM_CHECKS = {"param_count": "count", "merge": "merge"}


def passed_value(names: Sequence[str]) -> str:
    """The ``checks`` value of rows whose method passed ``names``."""
    return PREFIX + ",".join(names)


def passed_checks(value: str) -> tuple[str, ...]:
    """The checks a row's ``checks`` value says passed (none for ``skipped`` or unknown)."""
    if value == LEGACY_PASSED:
        return LEGACY_CHECKS
    if value.startswith(PREFIX):
        return tuple(n for n in value[len(PREFIX) :].split(",") if n)
    return ()


def shipped(method: str, origin: str) -> bool:
    """Whether a method ships with pebench (built-in or a ``peft:`` type of the bridge)."""
    return origin == "builtin" or method.startswith("peft:")


def unverified(value: str, method: str, origin: str) -> list[str]:
    """The :data:`CLAIM_CHECKS` a row's method did not pass (their short names), in order.

    ``skipped`` rows are marked as such elsewhere and give ``[]`` here; a legacy ``passed`` (or
    an empty value) of a method shipped with pebench counts as every check (see the module
    docstring).
    """
    if value == SKIPPED or (value in (LEGACY_PASSED, "") and shipped(method, origin)):
        return []
    done = passed_checks(value)
    return [short for check, short in CLAIM_CHECKS.items() if check not in done]


__all__ = [
    "CLAIM_CHECKS",
    "LEGACY_CHECKS",
    "LEGACY_PASSED",
    "SKIPPED",
    "passed_checks",
    "passed_value",
    "shipped",
    "unverified",
]
