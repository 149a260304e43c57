"""The committed demo table's statistics, recomputed here from the raw rows and records.

The leaderboard's 95 % intervals, rank (UB), tiers and rank intervals for the committed results
against independent computations (:mod:`stats_reference`: scipy's t, brute force over pairs, a
loop-coded simulation), reading the records as plain JSON. Each check is also shown to fail for a
deliberately wrong estimator (no test-set term, no multiplicity correction).
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import stats_reference as ref

from pebench.report.aggregate import aggregate
from pebench.report.tables import tables

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "results" / "runs"
committed = pytest.mark.skipif(
    not any(RUNS.glob("*.record.json")), reason="no committed results with records"
)


@pytest.fixture(scope="module")
def table():
    (demo,) = [t for t in tables(aggregate(ROOT / "results"), None, None) if t.info.name == "demo"]
    return demo


def _plain(entry) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """task -> (seed accuracies %, correctness) read straight from the committed files."""
    out: dict[str, list] = {}
    for r in sorted(entry.runs, key=lambda r: (r["task"], r["seed"], r["run_id"])):
        body = json.loads((RUNS / f"{r['run_id']}.record.json").read_text())
        correct = np.array([c == "1" for c in body["correct"]])
        assert correct.sum() / len(correct) == r["test_top1"]  # the record is the row's
        out.setdefault(r["task"], []).append(correct)
    return {t: (100 * np.array([c.mean() for c in cs]), np.stack(cs)) for t, cs in out.items()}


def _weights(table):
    return {t: 1 / len(table.info.tasks) for t in table.info.tasks}


@committed
def test_every_interval_is_the_independent_t_interval(table):
    weights = _weights(table)
    for e in table.entries:
        value, lo, hi = ref.interval(_plain(e), weights)
        est = e.stats.interval
        assert (est.value, est.lo, est.hi) == pytest.approx((value, lo, hi), rel=1e-9), e.label
        assert est.test_term == "records"
        # the wrong estimator (seed variance only, no test-set term) gives another interval
        seeds_only = {t: (x, None) for t, (x, _) in _plain(e).items()}
        _, lo2, hi2 = ref.interval(seeds_only, weights)
        assert (lo2, hi2) != pytest.approx((est.lo, est.hi), rel=1e-6)


@committed
def test_ub_ranks_and_tiers_by_brute_force(table):
    plain = [_plain(e) for e in table.entries]
    means = [e.rank for e in table.entries]
    ub, tiers = ref.ub_ranks_and_tiers(plain, _weights(table), means)
    assert [e.stats.ub_rank for e in table.entries] == ub
    assert [e.stats.tier for e in table.entries] == tiers
    # the wrong estimator: without the Holm correction more rows would look beaten
    raw = [1 + sum(ref.paired_p(plain[j], plain[i], _weights(table))[1] < 0.05
                   and means[j] > means[i] for j in range(len(plain)))
           for i in range(len(plain))]  # fmt: skip
    assert sum(raw) > sum(ub)


@committed
def test_rank_intervals_agree_with_a_loop_coded_simulation(table):
    """Every row's seed mean drawn from its t posterior, the rows' test-set errors jointly
    (their per-image covariance), 20,000 draws with another seed: each rank interval within
    one rank of the table's."""
    rng = np.random.default_rng(2024)
    plain = [_plain(e) for e in table.entries]
    w, draws = _weights(table), 20_000
    totals = np.array([[e.rank] * draws for e in table.entries], dtype=float)
    for t, wt in w.items():
        for r, row in enumerate(plain):
            x = row[t][0]
            totals[r] += wt * x.std(ddof=1) / math.sqrt(len(x)) * rng.standard_t(len(x) - 1, draws)
        cbar = np.stack([row[t][1].mean(axis=0) for row in plain])
        cov = 1e4 * np.cov(cbar) / cbar.shape[1]
        totals += wt * rng.multivariate_normal(np.zeros(len(plain)), cov, draws).T
    ranks = (-totals).argsort(axis=0).argsort(axis=0) + 1
    for r, e in enumerate(table.entries):
        lo = np.quantile(ranks[r], 0.025, method="lower")
        hi = np.quantile(ranks[r], 0.975, method="higher")
        assert abs(e.stats.rank_lo - lo) <= 1 and abs(e.stats.rank_hi - hi) <= 1, e.label


@committed
def test_the_committed_table_says_what_it_said(table):
    """The published figures, pinned: a change to the rows or to an estimator shows here (and
    the tests above say whether the new values are still the definitions')."""
    head = {e.label: (e.stats.interval.lo, e.stats.interval.hi) for e in table.entries[:3]}
    assert head == {
        "convpass": pytest.approx((78.56, 83.65), abs=0.005),
        "full": pytest.approx((73.38, 87.91), abs=0.005),
        "padapter": pytest.approx((63.01, 88.99), abs=0.005),
    }
    assert [e.stats.ub_rank for e in table.entries] == [
        1, 1, 1, 1, 1, 2, 1, 1, 1, 2, 1, 2, 2, 2, 1, 8, 2, 9, 9, 11, 12, 16, 19
    ]  # fmt: skip
    assert [e.stats.tier for e in table.entries] == [
        1, 1, 1, 1, 1, 2, 1, 1, 1, 2, 1, 2, 2, 2, 1, 3, 2, 3, 3, 3, 3, 4, 5
    ]  # fmt: skip
    assert [(e.stats.rank_lo, e.stats.rank_hi) for e in table.entries[:5]] == [
        (1, 4), (1, 9), (1, 17), (2, 12), (2, 14)
    ]  # fmt: skip
    assert table.stats.resolvable()[0] == pytest.approx(7.54, abs=0.005)
