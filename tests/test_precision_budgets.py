"""The real-suite v3 budgets: the v2 recipe with search replicates, smoothed selection and a
seed count derived for a declared precision target; the target as a budget field."""

import pytest
from budgets import budget_toml

from pebench.budget import BUDGETS, BudgetError, get_budget
from pebench.budget_file import canonical_json, load_budget_file
from pebench.datasets.catalog import get_suite
from pebench.listing import budgets

#: what v3 changes of v2's recipe; everything else (epochs, ladder, batch, model...) is v2's
CHANGED = {"id", "seeds", "search_replicates", "selection", "precision_target", "description",
           "purpose"}  # fmt: skip


@pytest.mark.parametrize(("suite", "seeds"), [("vtab", 5), ("fgvc", 5), ("fewshot", 3)])
def test_v3_is_v2_with_replicates_smoothing_and_derived_seeds(suite, seeds):
    v3 = get_budget(get_suite(suite).default_budget)
    v2 = get_budget(v3.id.replace("-v3", "-v2"))
    assert v3.id.endswith("-v3")
    assert (v3.search_replicates, v3.selection, len(v3.seeds)) == (3, "smoothed", seeds)
    assert v3.precision_target == 1.0
    same = {k: v for k, v in v2.as_dict().items() if k not in CHANGED}
    assert same == {k: v for k, v in v3.as_dict().items() if k not in CHANGED}
    # runs per task: 6 trials x 3 replicates + the seeds (v2: 6 + 3)
    assert len(v3.trials()) * 3 + seeds == 18 + seeds and len(v2.trials()) + len(v2.seeds) == 9


def test_the_reference_budgets_declare_their_target_and_list_shows_it():
    assert get_budget("demo-ref-v2").precision_target == 4.5
    assert get_budget("demo-v4").precision_target is None  # the quick demo has none
    listed = {b["name"]: b for b in budgets()}
    assert listed["vtab1k-v3"]["target"] == "1 pts" and "target" not in listed["demo-v4"]
    assert all(b.precision_target is None or b.selection == "smoothed" for b in BUDGETS.values())


def test_the_quick_demo_is_demo_v3_with_its_ladder_in_decades():
    """#22: the README's first command within 2 minutes and 220 CPU-s on 2 cores (demo-v3: 242)."""
    v3, v4 = get_budget("demo-v3"), get_budget("demo-v4")
    assert get_suite("demo").default_budget == "demo-v4"
    assert v4.lr_grid == (3e-4, 3e-3, 3e-2, 3e-1) == v3.lr_grid[::2]  # same span, decade steps
    prose = {"id", "lr_grid", "description", "purpose"}
    assert {k: v for k, v in v3.as_dict().items() if k not in prose} == {
        k: v for k, v in v4.as_dict().items() if k not in prose
    }
    # runs per task: 4 trials + 3 seeds (demo-v3: 7 + 3)
    assert len(v4.trials()) + len(v4.seeds) == 7 and len(v3.trials()) + len(v3.seeds) == 10
    assert v4.precision_target is None and "smoke-level" in v4.purpose
    assert "superseded by demo-v4" in v3.purpose


def test_a_budget_file_may_declare_a_target_and_keeps_its_id_without_one(tmp_path):
    def load(name, **fields):
        (tmp_path / name).write_text(budget_toml(**fields))
        return load_budget_file(tmp_path / name)

    plain, aimed = load("a.toml"), load("b.toml", precision_target=2.5)
    assert "precision_target" not in canonical_json(plain)
    assert aimed.precision_target == 2.5 and aimed.id != plain.id
    for bad in (0, -1, "2", 1000):
        with pytest.raises(BudgetError, match="key 'precision_target' must be a number > 0"):
            load("c.toml", precision_target=bad)
