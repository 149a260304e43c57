"""The leaderboard's estimators against independent computations written here.

Each estimator is recomputed from its definition with scipy directly (or by brute force), and a
deliberately wrong variant (unpaired test terms, a normal quantile, Bonferroni instead of Holm,
a wrong tier rule) is shown to give another answer, so each comparison can fail.
"""

import math

import numpy as np
import pytest
import stats_reference as ref
from scipy import stats

from pebench.report import stats as S


def _row(rng, means, seeds=3, n=200, base=None, flip=0.0):
    """A row with correctness matrices: image ``i`` is right when its difficulty ``base[t][i]``
    is below the row's accuracy (rows sharing ``base`` err on the same images), then ``flip``
    of the flags are changed per seed."""
    tasks = {}
    for t, p in means.items():
        shared = (rng.random(n) if base is None else base[t]) < p
        correct = np.stack([shared ^ (rng.random(n) < flip) for _ in range(seeds)])
        tasks[t] = S.TaskRuns(100 * correct.mean(axis=1), correct, n, "m")
    return S.RowRuns(tasks, dict.fromkeys(means, 1 / len(means)))


def _plain(row):
    """A row as the reference computations take it: task -> (seed values, correctness)."""
    return {t: (r.values, r.correct) for t, r in row.tasks.items()}


def test_suite_interval_is_the_welch_satterthwaite_t_interval():
    rng = np.random.default_rng(0)
    row = _row(rng, {"a": 0.6, "b": 0.9, "c": 0.7}, flip=0.1)
    est = S.suite_interval(row)
    value, lo, hi = ref.interval(_plain(row), row.weights)
    assert (est.value, est.lo, est.hi) == pytest.approx((value, lo, hi), rel=1e-12)
    assert est.test_term == "records"


def test_few_seeds_widen_the_interval_beyond_a_normal_one():
    """Seed variance dominating (3 widely spread seeds): t with ~2-4 df, not the normal 1.96."""
    values = {"a": [40.0, 60.0, 52.0], "b": [70.0, 90.0, 75.0]}
    tasks = {t: S.TaskRuns(np.array(v), None, 100_000) for t, v in values.items()}
    est = S.suite_interval(S.RowRuns(tasks, {"a": 0.5, "b": 0.5}))
    assert est.df < 5
    assert est.hi - est.value > 1.3 * stats.norm.ppf(0.975) * est.se


def test_a_single_seed_gives_no_interval():
    rng = np.random.default_rng(1)
    est = S.suite_interval(_row(rng, {"a": 0.5}, seeds=1))
    assert math.isnan(est.lo) and math.isnan(est.se)


def test_counts_only_rows_use_the_binomial_test_term():
    row = S.RowRuns({"a": S.TaskRuns(np.array([50.0, 60.0, 55.0]), None, 400)}, {"a": 1.0})
    est = S.suite_interval(row)
    p = 0.55
    var = np.var([50.0, 60.0, 55.0], ddof=1) / 3 + 1e4 * p * (1 - p) / 400
    assert est.se == pytest.approx(math.sqrt(var)) and est.test_term == "binomial"


def test_the_difference_pairs_the_test_term_on_the_same_images():
    rng = np.random.default_rng(2)
    base = {t: rng.random(200) for t in ("a", "b")}
    a = _row(rng, {"a": 0.6, "b": 0.8}, base=base, flip=0.05)
    b = _row(rng, {"a": 0.6, "b": 0.8}, base=base, flip=0.08)
    d = S.difference(a, b)
    parts = []
    for t, w in a.weights.items():
        for row in (a, b):
            x = row.tasks[t].values
            parts.append((w**2 * x.var(ddof=1) / len(x), len(x) - 1))
        diff = a.tasks[t].correct.mean(0) - b.tasks[t].correct.mean(0)
        parts.append((w**2 * 1e4 * diff.var(ddof=1) / len(diff), len(diff) - 1))
    var = sum(v for v, _ in parts)
    assert d.se == pytest.approx(math.sqrt(var), rel=1e-12) and d.test_term == "paired"
    assert d.value == pytest.approx(a.mean - b.mean)
    unpaired = math.sqrt(S.suite_interval(a).se ** 2 + S.suite_interval(b).se ** 2)
    assert unpaired > 1.2 * d.se  # independent test terms overstate a paired difference
    p = 2 * stats.t.sf(abs(d.value) / d.se, d.df)
    assert S.p_value(d) == pytest.approx(p)


def test_rows_on_other_images_are_not_paired():
    rng = np.random.default_rng(3)
    a = _row(rng, {"a": 0.6})
    b = _row(rng, {"a": 0.6})
    b = S.RowRuns(
        {"a": S.TaskRuns(b.tasks["a"].values, b.tasks["a"].correct, 200, "other")}, b.weights
    )
    assert S.difference(a, b).test_term == "records"


def test_holm_matches_its_definition_and_is_not_bonferroni():
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    assert S.holm(p) == pytest.approx(ref.holm(p))
    assert S.holm(p) != pytest.approx([min(1, 5 * v) for v in p])


def _table(seed=4, k=6):
    rng = np.random.default_rng(seed)
    base = {t: rng.random(200) for t in ("a", "b")}
    return [
        _row(rng, {"a": 0.5 + 0.05 * i, "b": 0.6 + 0.04 * i}, seeds=5, base=base, flip=0.03)
        for i in range(k)
    ]


def test_ub_ranks_and_tiers_by_brute_force():
    rows = _table()
    table = S.table_stats(rows)
    ub, tiers = ref.ub_ranks_and_tiers(
        [_plain(r) for r in rows], rows[0].weights, [r.mean for r in rows]
    )
    assert table.ub_rank == ub and table.tiers == tiers
    assert max(table.ub_rank) > 1  # the test can tell rows apart here
    wrong = S.tiers([r.mean for r in rows], [[] for _ in rows])  # nothing significant
    assert wrong != table.tiers


def test_rank_intervals_agree_with_an_independent_simulation():
    """Joint draws coded again with loops, another seed and 5x the draws: each row's 95 % rank
    interval within one rank of the table's."""
    rows = _table(k=5)
    table = S.table_stats(rows)
    rng = np.random.default_rng(123)
    draws = 20_000
    totals = np.zeros((len(rows), draws))
    for r, row in enumerate(rows):
        totals[r] = row.mean
        for t, w in row.weights.items():
            x = row.tasks[t].values
            totals[r] += w * x.std(ddof=1) / math.sqrt(len(x)) * rng.standard_t(len(x) - 1, draws)
    for t in rows[0].weights:
        cbar = np.stack([row.tasks[t].per_image() for row in rows])
        cov = 1e4 * np.cov(cbar) / cbar.shape[1]
        totals += 0.5 * rng.multivariate_normal(np.zeros(len(rows)), cov, draws).T
    ranks = (-totals).argsort(axis=0).argsort(axis=0) + 1
    for r in range(len(rows)):
        lo, hi = (
            np.quantile(ranks[r], [0.025, 0.975], method="lower")[0],
            np.quantile(ranks[r], 0.975, method="higher"),
        )
        assert abs(table.rank_lo[r] - lo) <= 1 and abs(table.rank_hi[r] - hi) <= 1


def test_the_minimum_detectable_difference_is_t_quantiles_times_se():
    d = S.Estimate(1.0, 2.0, 12.0, 0.0, 0.0)
    assert S.mdd(d) == pytest.approx((stats.t.ppf(0.975, 12) + stats.t.ppf(0.8, 12)) * 2.0)
    assert S.mdd(d) > 2.80 * 2.0  # the normal rule of thumb understates it at 12 df


def test_probability_of_improvement_by_enumeration():
    a = S.RowRuns(
        {"x": S.TaskRuns(np.array([1.0, 3.0])), "y": S.TaskRuns(np.array([5.0, 5.0]))},
        {"x": 0.5, "y": 0.5},
    )
    b = S.RowRuns(
        {"x": S.TaskRuns(np.array([2.0, 3.0])), "y": S.TaskRuns(np.array([4.0, 6.0]))},
        {"x": 0.5, "y": 0.5},
    )
    # x: pairs (1,2) 0, (1,3) 0, (3,2) 1, (3,3) 1/2 -> 1.5/4; y: (5,4) 1, (5,6) 0 twice -> 2/4
    assert S.probability_of_improvement(a, b) == pytest.approx((1.5 / 4 + 2 / 4) / 2)
