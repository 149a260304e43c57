"""The ``smoothed`` selection rule: each rung's mean smoothed with its lr neighbours.

The attack on the ``max`` rule: a lone spike between two poor rungs, or a rung next to a cliff,
wins on noise. Smoothing (weights 1/4, 1/2, 1/4; 1/3, 2/3 at an end of the ladder) ranks a
plateau above a spike and a rung whose neighbour diverged below one whose neighbours trained.
Hand computations below; the rule travels in the rows (``selection_rule``), so the sweep, the
status and the leaderboard apply the same rule to the same rows.
"""

import math

import pytest
from budgets import budget_toml
from sweeps import run_sweep

from pebench.budget import get_budget
from pebench.budget_file import canonical_json, load_budget_file
from pebench.report.inference import selection_flags
from pebench.report.tables import matching_selection
from pebench.run import RunOptions
from pebench.selection import margin, rule_of, select_trial, trial_scores
from pebench.sweep.plan import plan_sweep


def _rows(means, rule="smoothed", wd=1e-4, status=None):
    """One replicate per rung: ``means`` maps lr -> validation score (NaN: diverged)."""
    out = []
    for i, (lr, v) in enumerate(sorted(means.items())):
        out.append(
            dict(
                trial=i, lr=lr, weight_decay=wd, val_top1=v, seed=0, run_id=f"{wd}-{i}",
                status="diverged" if math.isnan(v) else (status or "ok"), n_val=400,
                selection_rule=rule,
            )
        )  # fmt: skip
    return out


def test_scores_are_the_hand_computed_weighted_means():
    rows = _rows({1e-3: 0.40, 3e-3: 0.60, 1e-2: 0.80, 3e-2: 0.20})
    scores = trial_scores(rows)
    assert [s.mean for s in scores.values()] == [0.40, 0.60, 0.80, 0.20]
    expected = [
        (2 * 0.40 + 0.60) / 3,  # an end of the ladder: 2/3 itself, 1/3 its one neighbour
        0.25 * 0.40 + 0.5 * 0.60 + 0.25 * 0.80,
        0.25 * 0.60 + 0.5 * 0.80 + 0.25 * 0.20,
        (2 * 0.20 + 0.80) / 3,
    ]
    assert [s.score for s in scores.values()] == pytest.approx(expected)


def test_a_plateau_beats_a_spike_that_the_max_rule_picks():
    means = {1e-3: 0.30, 3e-3: 0.72, 1e-2: 0.30, 3e-2: 0.69, 1e-1: 0.70}
    assert select_trial(_rows(means, rule="max"))["lr"] == 3e-3  # the lone spike
    best = select_trial(_rows(means))
    assert best["lr"] == 1e-1 or best["lr"] == 3e-2
    # 3e-2: 0.25*0.30 + 0.5*0.69 + 0.25*0.70 = 0.595; 1e-1 (end): (2*0.70 + 0.69)/3 = 0.6967
    assert best["lr"] == 1e-1
    assert best["val_top1"] == 0.70  # the final records the rung's own mean, not its score


def test_a_rung_next_to_a_divergence_loses_to_one_inside_the_plateau():
    # the max rule picks 3e-2, the last rung before the lr where training diverges
    means = {1e-3: 0.50, 3e-3: 0.70, 1e-2: 0.74, 3e-2: 0.76, 1e-1: math.nan}
    assert select_trial(_rows(means, rule="max"))["lr"] == 3e-2
    scores = trial_scores(_rows(means))
    assert scores[4].mean == 0.0  # a diverged rung counts 0, also as a neighbour
    assert scores[3].score == pytest.approx(0.25 * 0.74 + 0.5 * 0.76 + 0.25 * 0.0)
    assert select_trial(_rows(means))["lr"] == 1e-2


def test_two_rungs_keep_their_order_and_ties_go_to_the_smaller_lr():
    assert select_trial(_rows({1e-3: 0.5, 1e-2: 0.6}))["lr"] == 1e-2
    assert select_trial(_rows({1e-3: 0.6, 1e-2: 0.5}))["lr"] == 1e-3
    # equal smoothed scores: 1e-3 and 1e-2 both score 0.5 -> the smaller lr
    assert select_trial(_rows({1e-3: 0.5, 3e-3: 0.5, 1e-2: 0.5}))["lr"] == 1e-3


def test_ladders_of_different_weight_decays_are_smoothed_apart():
    rows = _rows({1e-3: 0.9, 1e-2: 0.1}, wd=0.0) + [
        {**r, "trial": r["trial"] + 2} for r in _rows({1e-3: 0.2, 1e-2: 0.3}, wd=0.1)
    ]
    scores = trial_scores(rows)
    assert scores[2].score == pytest.approx((2 * 0.2 + 0.3) / 3)  # not mixed with wd=0's rungs
    assert select_trial(rows)["trial"] == 0


def test_the_rule_comes_from_the_rows():
    assert rule_of([]) == "max"
    assert rule_of([{"selection_rule": ""}]) == "max"  # rows written before the column
    with pytest.raises(ValueError, match="different selection rules"):
        rule_of([{"selection_rule": "max"}, {"selection_rule": "smoothed"}])
    with pytest.raises(ValueError, match="unknown selection rule 'median'"):
        rule_of([{"selection_rule": "median"}])


def test_margin_and_the_close_flag_compare_smoothed_scores():
    rows = _rows({1e-3: 0.30, 3e-3: 0.72, 1e-2: 0.30, 3e-2: 0.69, 1e-1: 0.70})
    best = select_trial(rows)
    _, lead = margin(rows)
    assert lead == pytest.approx((2 * 0.70 + 0.69) / 3 - (0.25 * 0.30 + 0.5 * 0.69 + 0.25 * 0.70))
    # its own mean (0.70) is below the spike's (0.72), yet it leads by 0.10 smoothed: not close
    assert "close" not in selection_flags(rows, best, num_classes=4)


def test_the_leaderboard_keeps_finals_of_the_smoothed_choice_and_not_of_another():
    means = {1e-3: 0.30, 3e-3: 0.72, 1e-2: 0.30, 3e-2: 0.69, 1e-1: 0.70}
    search = _rows(means)
    from pebench.report.aggregate import CONFIG_KEYS

    keys = {**dict.fromkeys(CONFIG_KEYS, "x"), "task": "t", "phase": "search"}
    search = [{**r, **keys} for r in search]
    final = {**search[4], "phase": "final", "seed": 0, "run_id": "f", "selection_edge": ""}
    notes: list[str] = []
    assert len(matching_selection([final], search + [final], notes)) == 1 and not notes
    # the same rows read under the max rule select the spike: the final is stale there
    as_max = [{**r, "selection_rule": ""} for r in search]
    assert matching_selection([final], as_max + [final], notes) == [] and "stale" in notes[0]


def test_budget_files_name_the_rule_and_keep_their_id_without_it(tmp_path):
    def load(name, **fields):
        (tmp_path / name).write_text(budget_toml(**fields))
        return load_budget_file(tmp_path / name)

    plain, as_max, smooth = (
        load("a.toml"),
        load("b.toml", selection="max"),
        load("c.toml", selection="smoothed"),
    )
    assert canonical_json(plain) == canonical_json(as_max)
    assert "selection" not in canonical_json(plain)
    assert smooth.selection == "smoothed" and '"selection":"smoothed"' in canonical_json(smooth)
    from pebench.budget import BudgetError

    with pytest.raises(BudgetError, match="selection.*'max'.*'smoothed'"):
        load("d.toml", selection="median")


def test_the_reference_budget_smooths_and_the_quick_demo_does_not():
    ref = get_budget("demo-ref-v2")
    assert ref.selection == "smoothed" and ref.search_replicates == 3 and len(ref.seeds) == 10
    assert get_budget("demo-ref-v1").selection == "max"  # kept as it was
    assert get_budget("demo-v3").selection == "max"
    from pebench.datasets.catalog import get_suite

    assert get_suite("demo-ref").default_budget == "demo-ref-v2"


def test_a_smoothed_sweep_records_its_rule_and_retrains_the_smoothed_best(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(budget_toml(lr_grid=[1e-3, 1e-2, 1e-1], selection="smoothed", subset=32))
    sweep = plan_sweep(
        "linear", RunOptions(progress=False, threads=1), budget=str(path),
        tasks="demo/shapes", seeds=[0], results_dir=tmp_path / "r",
    )  # fmt: skip
    rows = run_sweep(sweep)
    assert {r["selection_rule"] for r in rows} == {"smoothed"}
    search = [r for r in rows if r["phase"] == "search"]
    (final,) = [r for r in rows if r["phase"] == "final"]
    v = [r["val_top1"] for r in sorted(search, key=lambda r: r["trial"])]
    smoothed = [
        (2 * v[0] + v[1]) / 3, 0.25 * v[0] + 0.5 * v[1] + 0.25 * v[2], (2 * v[2] + v[1]) / 3
    ]  # fmt: skip
    assert final["trial"] == max(range(3), key=lambda t: (smoothed[t], -t))
