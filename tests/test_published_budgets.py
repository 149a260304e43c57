"""A published budget never changes: every built-in's protocol values are pinned by hash.

Rows name their budget by id only, so an edited built-in would silently relabel old rows with a
protocol they did not run. The hash covers every value that can move a number (the canonical
JSON of :func:`pebench.budget_file.canonical_json`, without the prose fields and the declared
precision target); a new protocol is a new id, added here. Built-ins also obey the rules
budget files obey (:func:`pebench.budget_file.check_values`, run at import).
"""

import hashlib
import json
from dataclasses import replace

import pytest

from pebench.budget import BUDGETS, BudgetError
from pebench.budget_file import canonical_json, check_values

#: fields that describe a budget without changing what it runs
PROSE = ("description", "purpose", "precision_target")

PUBLISHED = {
    "demo-v1": "5b6b770be13e",
    "demo-smoke": "183d99989607",
    "demo-v2": "60e81113c4ea",
    "demo-v3": "0edc38dc0daa",
    "demo-v4": "965c213f9578",
    "demo-ref-v1": "0e076669f620",
    "demo-ref-v2": "5ab814b9beb8",
    "vtab1k-v1": "f86249c0c3f9",
    "fgvc-v1": "f86249c0c3f9",
    "fewshot-v1": "f86249c0c3f9",
    "vtab1k-v2": "3e0ea57600ed",
    "fgvc-v2": "3e0ea57600ed",
    "fewshot-v2": "3e0ea57600ed",
    "vtab1k-v3": "04c415049080",
    "fgvc-v3": "04c415049080",
    "fewshot-v3": "d5a1b6820049",
    "check-v1": "826d9f87b143",
    "check-micro-v1": "f954e7efe797",
    "vtab1k-smoke": "48ca0874465d",
    "video-v1": "ac43163f0ff9",
    "video-smoke": "971a4e0231b8",
}


def protocol_hash(budget) -> str:
    values = json.loads(canonical_json(budget))
    for key in PROSE:
        values.pop(key, None)
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def test_every_published_budget_is_pinned_and_unchanged():
    assert set(BUDGETS) == set(PUBLISHED), "a new built-in budget: pin its hash here"
    changed = {k: protocol_hash(b) for k, b in BUDGETS.items() if protocol_hash(b) != PUBLISHED[k]}
    assert not changed, f"published budgets edited (give the new protocol a new id): {changed}"


def test_the_pin_sees_any_protocol_value_and_ignores_prose():
    b = BUDGETS["demo-v3"]
    edits = [
        dict(epochs=6), dict(lr_grid=(*b.lr_grid[:-1], 0.2)), dict(seeds=(0, 1)),
        dict(search_replicates=2), dict(selection="smoothed"), dict(batch_size=16),
    ]  # fmt: skip
    for edit in edits:
        assert protocol_hash(replace(b, **edit)) != PUBLISHED["demo-v3"], edit
    assert (
        protocol_hash(replace(b, description="x", purpose="y", precision_target=3.0))
        == (PUBLISHED["demo-v3"])
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (dict(epochs=0), "budget demo-v3: key 'epochs' must be an integer >= 1"),
        (dict(warmup_epochs=9), "budget demo-v3: key 'warmup_epochs' must be at most epochs"),
        (dict(lr_grid=(1e-3, 1e-3)), "budget demo-v3: key 'lr_grid' must be a non-empty list"),
        (dict(image_size=10**6), "budget demo-v3: key 'image_size' must be an integer"),
    ],
)
def test_a_built_in_is_checked_by_the_rules_of_a_budget_file(edit, message):
    with pytest.raises(BudgetError, match=message.replace("'", ".")):
        check_values(replace(BUDGETS["demo-v3"], **edit))
