"""Search replicates: each trial runs under R search seeds and the selection ranks trial means.

The attack on a single run per trial: at the top of the ladder one seed survives an lr that the
next seed diverges at, and the maximum of single noisy runs picks that cliff-edge lr. With
replicates, a diverged replicate counts 0 in its trial's mean, so such an lr scores below a
stable one; dropping the diverged replicate instead (the wrong rule) would let it win.
"""

import math

import pytest
from budgets import budget_toml
from sweeps import run_sweep

from pebench.budget_file import canonical_json
from pebench.run import RunOptions
from pebench.selection import DIVERGED_SCORE, margin, select_trial, trial_scores
from pebench.store import RunStore
from pebench.sweep.plan import plan_sweep


def _row(trial, lr, val, seed=0, status="ok"):
    return dict(
        trial=trial, lr=lr, weight_decay=1e-4, val_top1=val, status=status, seed=seed,
        run_id=f"{trial}-{seed}",
    )  # fmt: skip


def test_a_trial_is_its_replicate_mean_and_a_diverged_replicate_counts_zero():
    rows = [
        _row(0, 1e-2, 0.60, 0), _row(0, 1e-2, 0.62, 1), _row(0, 1e-2, 0.61, 2),
        # the cliff edge: two seeds survive brilliantly, one diverges
        _row(1, 3e-2, 0.80, 0), _row(1, 3e-2, math.nan, 1, "diverged"), _row(1, 3e-2, 0.78, 2),
    ]  # fmt: skip
    scores = trial_scores(rows)
    assert scores[0].mean == pytest.approx(0.61) and scores[0].ok == 3
    assert scores[1].mean == pytest.approx((0.80 + DIVERGED_SCORE + 0.78) / 3)
    assert scores[1].replicates == 3 and scores[1].ok == 2
    best = select_trial(rows)
    assert best["trial"] == 0 and best["val_top1"] == pytest.approx(0.61)
    # the wrong rule (diverged replicates left out of the mean) would pick the cliff edge
    survivors = [r for r in rows if r["status"] == "ok"]
    assert select_trial(survivors)["trial"] == 1
    sd, lead = margin(rows)
    assert sd == pytest.approx(0.01) and lead == pytest.approx(0.61 - 1.58 / 3)


def test_one_replicate_is_the_single_run_rule():
    rows = [_row(0, 1e-3, 0.5), _row(1, 1e-2, 0.7), _row(2, 3e-2, math.nan, status="diverged")]
    assert select_trial(rows) is rows[1]  # the row itself, its own score
    assert select_trial([_row(0, 1e-3, math.nan, status="diverged")]) is None


def test_ties_of_means_go_to_the_smaller_lr():
    rows = [
        _row(0, 1e-2, 0.5, 0),
        _row(0, 1e-2, 0.7, 1),
        _row(1, 3e-3, 0.6, 0),
        _row(1, 3e-3, 0.6, 1),
    ]
    assert select_trial(rows)["trial"] == 1


def _load(tmp_path, name, text):
    from pebench.budget_file import load_budget_file

    path = tmp_path / name
    path.write_text(text)
    return load_budget_file(path)


def test_a_budget_file_without_replicates_keeps_its_id(tmp_path):
    """The field came later: at its default it is not part of the hashed text."""
    one = _load(tmp_path, "b.toml", budget_toml())
    three = _load(tmp_path, "c.toml", budget_toml(search_replicates=3))
    assert "search_replicates" not in canonical_json(one)
    assert '"search_replicates":3' in canonical_json(three) and one.id != three.id


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_bad_replicate_counts_are_refused(tmp_path, bad):
    from pebench.budget import BudgetError

    with pytest.raises(BudgetError, match="search_replicates"):
        _load(tmp_path, "b.toml", budget_toml(search_replicates=bad))


def test_a_sweep_runs_every_replicate_and_retrains_the_best_mean(tmp_path):
    path = tmp_path / "rep.toml"
    path.write_text(budget_toml(lr_grid=[1e-3, 1e-2], search_replicates=2, subset=32))
    sweep = plan_sweep(
        "linear", RunOptions(progress=False, threads=1), budget=str(path),
        tasks="demo/shapes", seeds=[0], results_dir=tmp_path / "r",
    )  # fmt: skip
    assert len(sweep.search_specs(sweep.tasks[0])) == 4  # 2 trials x 2 replicates
    rows = run_sweep(sweep)
    search = [r for r in rows if r["phase"] == "search"]
    assert [(r["trial"], r["replicate"], r["seed"]) for r in search] == [
        (0, 0, 0), (0, 1, 1), (1, 0, 0), (1, 1, 1)
    ]  # fmt: skip
    assert len({r["run_id"] for r in search}) == 4 and all(r["record_sha256"] for r in search)
    (final,) = [r for r in rows if r["phase"] == "final"]
    means = {t: s.mean for t, s in trial_scores(search).items()}
    assert final["trial"] == max(means, key=lambda t: (means[t], -t))
    assert final["val_top1"] == pytest.approx(means[final["trial"]])
    assert {r["run_id"] for r in RunStore(tmp_path / "r").rows()} == {r["run_id"] for r in rows}
