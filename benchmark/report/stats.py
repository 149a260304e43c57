"""Uncertainty of suite means and of their differences (torch-free: numpy and scipy).

One leaderboard row on one suite is a weighted mean over tasks of per-task seed means,
``M = Σ_t w_t x̄_t`` (``w_t = 1/K`` for a plain mean; ``1/(G·n_g)`` for a mean of group means).
Its error has two parts that pebench can measure (statistics.md):

- **seed**: ``Σ_t w_t² s_t² / S_t``: each task's sample variance over its ``S_t`` seeds (training
  randomness seen through the fixed test set), stratified by task;
- **test**: ``Σ_t w_t² var_i(c̄_ti) / n_t``: which images stand for the task, from the per-image
  correctness ``c̄_ti`` averaged over the row's seeds (the run records); a row without records
  falls back to the binomial ``p(1−p)/n`` when it knows ``n``.

Intervals use a t quantile with Welch–Satterthwaite degrees of freedom over these parts (each
seed part has ``S_t − 1``, each test part ``n_t − 1``), which covers 93–97 % at 3–10 seeds in
simulation (``tests/test_stats_coverage.py``); a percentile bootstrap cannot leave the range of 3
observed values and under-covers there. A **difference** of two rows on the same images takes
the **paired** test term ``var_i(c̄ᴬ_ti − c̄ᴮ_ti) / n_t``: two methods err on many of the same
images, so independent binomial terms would overstate it.

On top of those: a two-sided t test per pair of rows with Holm's step-down correction over the
table's pairs; rank (UB) = 1 + the number of rows significantly better (it cannot over-claim);
tiers; rank intervals from joint draws of every row; the minimum detectable difference at 80 %
power; and the probability of improvement (Bouthillier et al. 2021; rliable's definition) with
a stratified bootstrap interval. Everything is in accuracy points (percent).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from scipy import stats

#: two-sided level of every interval and test
ALPHA = 0.05
#: power the minimum detectable difference is computed for
POWER = 0.80
#: seeds a row needs on every task before pebench makes a significance claim about it
MIN_SEEDS_FOR_CLAIMS = 5
#: joint draws behind the rank intervals (fixed RNG seed: the table is reproducible)
RANK_DRAWS = 4000
RANK_SEED = 0
#: bootstrap resamples behind a probability-of-improvement interval
POI_RESAMPLES = 2000


@dataclass(frozen=True)
class TaskRuns:
    """One row's final runs on one task.

    Attributes:
        values: test accuracy per seed (%), ``(S,)``.
        correct: per-image correctness per seed, bool ``(S, n)``, in the prepared split's order;
            ``None`` when the runs have no records.
        n: test examples (``None`` when unknown: rows written before pebench counted them).
        images: what identifies the test images and their order (the data manifest): two rows
            are paired on a task only when this is equal.
    """

    values: np.ndarray
    correct: np.ndarray | None = None
    n: int | None = None
    images: str = ""

    @property
    def seeds(self) -> int:
        """Seeds (runs) on the task."""
        return len(self.values)

    @property
    def mean(self) -> float:
        """Mean over seeds (%)."""
        return float(np.mean(self.values))

    def per_image(self) -> np.ndarray | None:
        """Correctness per image averaged over seeds (``c̄_i``), or ``None``."""
        return None if self.correct is None else self.correct.mean(axis=0)


@dataclass(frozen=True)
class RowRuns:
    """One leaderboard row on one suite: its runs per task and the suite mean's task weights."""

    tasks: Mapping[str, TaskRuns]
    weights: Mapping[str, float]

    @property
    def mean(self) -> float:
        """The suite mean (%)."""
        return float(sum(w * self.tasks[t].mean for t, w in self.weights.items()))

    @property
    def min_seeds(self) -> int:
        """Fewest seeds on any task of the suite."""
        return min(self.tasks[t].seeds for t in self.weights)


#: a variance part and its degrees of freedom
Part = tuple[float, float]


@dataclass(frozen=True)
class Estimate:
    """A suite mean or a difference of two, with its 95 % interval.

    Attributes:
        value: the estimate (points).
        se: its standard error (NaN when a task has a single seed).
        df: Welch–Satterthwaite degrees of freedom.
        lo: lower end of the 95 % interval.
        hi: upper end.
        test_term: how the test part was computed: ``paired`` (per-image records on the same
            images), ``records``, ``binomial`` (counts only) or ``none`` (unknown ``n``).
    """

    value: float
    se: float
    df: float
    lo: float
    hi: float
    test_term: str = "none"

    @property
    def half_width(self) -> float:
        """Half the interval's width."""
        return (self.hi - self.lo) / 2


def welch_satterthwaite(parts: Sequence[Part]) -> tuple[float, float]:
    """``(total variance, degrees of freedom)`` of a sum of independent variance estimates."""
    total = float(sum(v for v, _ in parts))
    denom = sum(v * v / d for v, d in parts if v > 0 and d > 0 and math.isfinite(d))
    if total <= 0 or denom == 0:
        return total, math.inf
    return total, total * total / denom


def _interval(value: float, parts: Sequence[Part], test_term: str) -> Estimate:
    var, df = welch_satterthwaite(parts)
    se = math.sqrt(var)
    q = stats.t.ppf(1 - ALPHA / 2, df) if math.isfinite(df) else stats.norm.ppf(1 - ALPHA / 2)
    return Estimate(value, se, df, value - q * se, value + q * se, test_term)


def _nan(value: float) -> Estimate:
    return Estimate(value, math.nan, math.nan, math.nan, math.nan)


def seed_parts(row: RowRuns) -> list[Part] | None:
    """``w_t² s_t² / S_t`` per task with ``S_t − 1`` df; ``None`` when a task has one seed."""
    parts = []
    for t, w in row.weights.items():
        runs = row.tasks[t]
        if runs.seeds < 2:
            return None
        parts.append((w * w * float(np.var(runs.values, ddof=1)) / runs.seeds, runs.seeds - 1))
    return parts


def _test_part(runs: TaskRuns) -> tuple[Part | None, str]:
    """The test-sampling variance of one task mean (points²) and how it was computed."""
    per_image = runs.per_image()
    if per_image is not None:
        n = len(per_image)
        return (100.0**2 * float(np.var(per_image, ddof=1)) / n, n - 1), "records"
    if runs.n:
        p = runs.mean / 100.0
        return (100.0**2 * p * (1 - p) / runs.n, runs.n - 1), "binomial"
    return None, "none"


def _weakest(kinds: Sequence[str]) -> str:
    order = ("none", "binomial", "records", "paired")
    return min(kinds, key=order.index) if kinds else "none"


def suite_interval(row: RowRuns) -> Estimate:
    """The suite mean with its 95 % interval (seed part stratified by task, plus test part)."""
    seeds = seed_parts(row)
    if seeds is None:
        return _nan(row.mean)
    parts, kinds = list(seeds), []
    for t, w in row.weights.items():
        part, kind = _test_part(row.tasks[t])
        kinds.append(kind)
        if part is not None:
            parts.append((w * w * part[0], part[1]))
    return _interval(row.mean, parts, _weakest(kinds))


def _paired_test_part(a: TaskRuns, b: TaskRuns) -> tuple[Part | None, str]:
    """The test variance of a task-mean difference: paired on the same images when possible."""
    ca, cb = a.per_image(), b.per_image()
    if ca is not None and cb is not None and a.images == b.images and len(ca) == len(cb):
        n = len(ca)
        return (100.0**2 * float(np.var(ca - cb, ddof=1)) / n, n - 1), "paired"
    pa, ka = _test_part(a)
    pb, kb = _test_part(b)
    if pa is None or pb is None:
        return None, "none"
    var, df = welch_satterthwaite([pa, pb])
    return (var, df), _weakest([ka, kb])


def difference(a: RowRuns, b: RowRuns, tasks: Sequence[str] | None = None) -> Estimate:
    """``M_a − M_b`` with its 95 % interval (both rows' seed parts + the paired test term).

    Args:
        a: one row.
        b: another row of the same suite (same task weights).
        tasks: a subset of the suite's tasks to compare on (weights renormalised), e.g. to
            leave one task out; default every task.
    """
    weights = dict(a.weights)
    if tasks is not None:
        total = sum(weights[t] for t in tasks)
        weights = {t: weights[t] / total for t in tasks}
    a, b = RowRuns(a.tasks, weights), RowRuns(b.tasks, weights)
    value = a.mean - b.mean
    sa, sb = seed_parts(a), seed_parts(b)
    if sa is None or sb is None:
        return _nan(value)
    parts, kinds = sa + sb, []
    for t, w in weights.items():
        part, kind = _paired_test_part(a.tasks[t], b.tasks[t])
        kinds.append(kind)
        if part is not None:
            parts.append((w * w * part[0], part[1]))
    return _interval(value, parts, _weakest(kinds))


def p_value(d: Estimate) -> float:
    """Two-sided p of ``d`` against 0 (t with its degrees of freedom)."""
    if not math.isfinite(d.se) or d.se == 0:
        return math.nan if not math.isfinite(d.se) else (1.0 if d.value == 0 else 0.0)
    return float(2 * stats.t.sf(abs(d.value) / d.se, d.df))


def holm(p: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted as a test)."""
    idx = [i for i, v in enumerate(p) if not math.isnan(v)]
    m = len(idx)
    out = [math.nan] * len(p)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: p[i])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def mdd(d: Estimate, power: float = POWER) -> float:
    """Minimum detectable difference of a pair at ``power`` (two-sided ``ALPHA``, t quantiles)."""
    if not math.isfinite(d.se):
        return math.nan
    if math.isfinite(d.df):
        q = stats.t.ppf(1 - ALPHA / 2, d.df) + stats.t.ppf(power, d.df)
    else:
        q = stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(power)
    return float(q * d.se)


# ------------------------------------------------------------------------------- table --
@dataclass
class TableStats:
    """The statistics of one suite table (rows in the table's order).

    Attributes:
        intervals: suite mean with its 95 % interval, per row.
        pairs: ``(i, j) -> (difference M_i − M_j, Holm-adjusted p)`` for ``i < j``.
        better: ``better[i]``: rows significantly better than row ``i``.
        ub_rank: 1 + the number of rows significantly better.
        tiers: tier number per row (1 = the best tier), see :func:`tiers`.
        rank_lo: 2.5 % quantile of the row's rank over joint draws.
        rank_hi: 97.5 % quantile.
        p_first: share of joint draws in which the row ranks first.
        mdd: minimum detectable difference per pair (80 % power), same keys as ``pairs``.
        claims: whether the row has enough seeds (:data:`MIN_SEEDS_FOR_CLAIMS`) for claims.
    """

    intervals: list[Estimate]
    pairs: dict[tuple[int, int], tuple[Estimate, float]] = field(default_factory=dict)
    better: list[list[int]] = field(default_factory=list)
    ub_rank: list[int] = field(default_factory=list)
    tiers: list[int] = field(default_factory=list)
    rank_lo: list[int] = field(default_factory=list)
    rank_hi: list[int] = field(default_factory=list)
    p_first: list[float] = field(default_factory=list)
    mdd: dict[tuple[int, int], float] = field(default_factory=dict)
    claims: list[bool] = field(default_factory=list)

    def significant(self, i: int, j: int) -> bool:
        """Whether row ``i`` is significantly better than row ``j`` (Holm over the pairs)."""
        return i in self.better[j]

    def resolvable(self) -> tuple[float, float, float]:
        """``(median, min, max)`` of the pairs' minimum detectable differences (NaN if none)."""
        values = [v for v in self.mdd.values() if math.isfinite(v)]
        if not values:
            return math.nan, math.nan, math.nan
        return float(np.median(values)), min(values), max(values)


def pairwise(rows: Sequence[RowRuns]) -> dict[tuple[int, int], tuple[Estimate, float]]:
    """Every pair's difference and Holm-adjusted p (over all the table's pairs)."""
    keys = list(combinations(range(len(rows)), 2))
    diffs = [difference(rows[i], rows[j]) for i, j in keys]
    adjusted = holm([p_value(d) for d in diffs])
    return {k: (d, p) for k, d, p in zip(keys, diffs, adjusted, strict=True)}


def better_than(n: int, pairs: Mapping[tuple[int, int], tuple[Estimate, float]]) -> list[list[int]]:
    """``out[j]``: the rows significantly better than row ``j`` (adjusted p < ``ALPHA``)."""
    out: list[list[int]] = [[] for _ in range(n)]
    for (i, j), (d, p) in pairs.items():
        if not p < ALPHA:
            continue
        if d.value > 0:
            out[j].append(i)
        elif d.value < 0:
            out[i].append(j)
    return out


def tiers(means: Sequence[float], better: Sequence[Sequence[int]]) -> list[int]:
    """Tier per row (1 = the best), by a stated greedy rule.

    The best remaining row (highest mean) and every remaining row not significantly worse than
    it form the next tier; repeat. Greedy, hence order-dependent: rows of one tier may still
    differ from each other (the rule, not a transitive relation).
    """
    left = sorted(range(len(means)), key=lambda i: (-means[i], i))
    out = [0] * len(means)
    tier = 0
    while left:
        tier += 1
        top = left[0]
        members = [i for i in left if i == top or top not in better[i]]
        for i in members:
            out[i] = tier
        left = [i for i in left if i not in members]
    return out


def rank_draws(
    rows: Sequence[RowRuns], draws: int = RANK_DRAWS, seed: int = RANK_SEED
) -> np.ndarray:
    """Ranks of every row (1 = best) over joint draws, ``(rows, draws)``.

    Each draw perturbs every row's suite mean by its two error parts: per task, the seed mean
    by ``s_t/√S_t`` times a Student t with ``S_t − 1`` df (independent across rows), and the
    test part jointly for the rows scored on the same images (a normal draw with the
    covariance of their per-image correctness, so rows that err on the same images move
    together; rows without records draw their binomial part alone).
    """
    rng = np.random.default_rng(seed)
    n_rows = len(rows)
    totals = np.array([r.mean for r in rows])[:, None] + np.zeros((n_rows, draws))
    tasks = list(rows[0].weights) if rows else []
    for t in tasks:
        for r, row in enumerate(rows):
            runs, w = row.tasks[t], row.weights[t]
            if runs.seeds >= 2:
                sd = float(np.std(runs.values, ddof=1)) / math.sqrt(runs.seeds)
                totals[r] += w * sd * rng.standard_t(runs.seeds - 1, draws)
        groups: dict[tuple[str, int], list[int]] = {}
        for r, row in enumerate(rows):
            per_image = row.tasks[t].per_image()
            if per_image is not None:
                groups.setdefault((row.tasks[t].images, len(per_image)), []).append(r)
            else:
                part, _ = _test_part(row.tasks[t])
                if part is not None:
                    totals[r] += row.weights[t] * math.sqrt(part[0]) * rng.standard_normal(draws)
        for (_, n), members in sorted(groups.items()):
            matrix = np.stack([rows[r].tasks[t].per_image() for r in members])
            cov = 100.0**2 * np.atleast_2d(np.cov(matrix, ddof=1)) / n
            w = np.array([rows[r].weights[t] for r in members])
            z = rng.multivariate_normal(np.zeros(len(members)), cov, draws, method="eigh")
            totals[members] += (w[None, :] * z).T
    order = np.argsort(-totals, axis=0, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, n_rows + 1)[:, None], axis=0)
    return ranks


def table_stats(rows: Sequence[RowRuns]) -> TableStats:
    """Intervals, pairwise tests, UB ranks, tiers, rank intervals and MDDs of a table."""
    intervals = [suite_interval(r) for r in rows]
    pairs = pairwise(rows)
    better = better_than(len(rows), pairs)
    out = TableStats(intervals, pairs, better)
    out.ub_rank = [1 + len(b) for b in better]
    out.tiers = tiers([r.mean for r in rows], better)
    if rows:
        ranks = rank_draws(rows)
        out.rank_lo = [int(v) for v in np.quantile(ranks, ALPHA / 2, axis=1, method="lower")]
        out.rank_hi = [int(v) for v in np.quantile(ranks, 1 - ALPHA / 2, axis=1, method="higher")]
        out.p_first = [float(v) for v in (ranks == 1).mean(axis=1)]
    out.mdd = {k: mdd(d) for k, (d, _) in pairs.items()}
    out.claims = [r.min_seeds >= MIN_SEEDS_FOR_CLAIMS for r in rows]
    return out


# -------------------------------------------------------------- probability of improvement --
def _poi_task(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) on one task from all seed pairs (ties count ½)."""
    diff = np.asarray(x)[:, None] - np.asarray(y)[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def probability_of_improvement(a: RowRuns, b: RowRuns) -> float:
    """P(A > B): the mean over tasks of P(a seed of A beats a seed of B) (rliable)."""
    return float(np.mean([_poi_task(a.tasks[t].values, b.tasks[t].values) for t in a.weights]))


def poi_interval(a: RowRuns, b: RowRuns, seed: int = 0) -> tuple[float, float]:
    """95 % stratified percentile bootstrap interval of :func:`probability_of_improvement`.

    Each task's seeds of each row are resampled independently (scipy's bootstrap over ``2K``
    samples). With 3 seeds a percentile bootstrap under-covers (it cannot leave the range of 3
    values); the coverage at 3, 5 and 10 seeds is measured in ``tests/test_stats_coverage.py``.
    """
    tasks = list(a.weights)
    samples = [s for t in tasks for s in (a.tasks[t].values, b.tasks[t].values)]
    if any(len(s) < 2 for s in samples):
        return math.nan, math.nan

    def statistic(*resampled: np.ndarray, axis: int = -1) -> np.ndarray:
        xs, ys = resampled[0::2], resampled[1::2]
        per_task = [
            (
                (x[..., :, None] - y[..., None, :] > 0) + 0.5 * (x[..., :, None] == y[..., None, :])
            ).mean(axis=(-1, -2))
            for x, y in zip(xs, ys, strict=True)
        ]
        return np.mean(per_task, axis=0)

    res = stats.bootstrap(
        samples,
        statistic,
        n_resamples=POI_RESAMPLES,
        confidence_level=1 - ALPHA,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


__all__ = [
    "ALPHA",
    "MIN_SEEDS_FOR_CLAIMS",
    "POWER",
    "Estimate",
    "RowRuns",
    "TableStats",
    "TaskRuns",
    "difference",
    "holm",
    "mdd",
    "p_value",
    "poi_interval",
    "probability_of_improvement",
    "rank_draws",
    "seed_parts",
    "suite_interval",
    "table_stats",
    "tiers",
    "welch_satterthwaite",
]
