"""Seeds from a precision target: what a design (seeds, search replicates, split sizes) resolves.

``pebench estimate --precision X`` reads an existing sweep (a pilot) and splits the variance of
a difference of two rows' suite means into the parts a design controls, per pair of rows and
task (statistics.md):

- **seed**: ``s²_t / S`` per row, from the finals' spread over their seeds;
- **test set**: the paired per-image term ``var_i(c̄ᴬ_i − c̄ᴮ_i) / n``. Averaged over ``S``
  seeds it is ``(P + Q/S) / n``: a part ``P`` the images carry whatever the seeds (what two
  methods get right or wrong on the same image) and a part ``Q`` each seed adds. Both come from
  the pilot's records: the single-seed differences give ``P + Q``, the seed-mean differences
  ``P + Q/S_pilot``. A larger test set divides the term by its size;
- **selection** (reported beside, not in the leaderboard's intervals): which learning rate the
  search retrains. A search is simulated from the pilot's search rows: each trial's validation
  score is redrawn around its observed mean with the noise of one run (the task's seed variance
  plus the binomial noise of the validation set) divided by the replicates ``R``, and the
  variance of the retrained trial's mean score is the selection variance.

For each design the smallest resolvable difference is the median over the pilot's pairs of rows
of ``(t₀.₉₇₅ + t₀.₈) × SE`` with Welch–Satterthwaite degrees of freedom: the leaderboard's
"resolution" line computed for a table that does not exist yet. The seed count of a budget is
then fixed from the target, for every row alike (never adapted per row: a per-row stopping rule
biases that row's error downward). Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from pebench.report import stats as S
from pebench.selection import DIVERGED_SCORE, smoothing_weights

#: simulated searches per (row, task) behind a selection variance (fixed RNG: reproducible)
SEARCH_DRAWS = 4000


@dataclass(frozen=True)
class Design:
    """One protocol to cost: seeds, search replicates, the sizes of the scored splits, the rule."""

    seeds: int
    replicates: int
    n_test: int | None = None
    n_val: int | None = None
    selection: str = "max"


@dataclass(frozen=True)
class Pilot:
    """What the pilot sweep says about one row on one task.

    Attributes:
        values: final test accuracy per seed (%).
        correct: per-image correctness per seed, bool ``(S, n)``; ``None`` without records.
        trials: mean validation score (%) per search trial (``NaN``: no ``ok`` run).
        n_val: validation images the pilot scored.
        grid: ``(lr, weight decay)`` of each trial (for the ``smoothed`` rule's neighbours).
    """

    values: np.ndarray
    correct: np.ndarray | None
    trials: Sequence[float]
    n_val: int | None
    grid: Sequence[tuple[float, float]] = ()


def paired_parts(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """``(P, Q)`` of the paired per-image term (points², per image) from two seed x image sets.

    ``P + Q`` is the variance over images of one seed's difference (mean over seed pairs),
    ``P + Q/S`` that of the seed-mean difference; solved for ``P`` (>= 0) and ``Q`` (>= 0).
    """
    seeds = min(len(a), len(b))
    diffs = [100.0 * (a[s].astype(float) - b[s]) for s in range(seeds)]
    single = float(np.mean([np.var(d, ddof=1) for d in diffs]))
    mean = float(np.var(100.0 * (a[:seeds].mean(0) - b[:seeds].mean(0)), ddof=1))
    if seeds < 2:
        return single, 0.0
    q = max(0.0, (single - mean) * seeds / (seeds - 1))
    return max(0.0, single - q), q


def simulated_picks(
    pilot: Pilot, replicates: int, n_val: int | None, seed: int = 0, selection: str = "max"
) -> np.ndarray:
    """The trial index each of :data:`SEARCH_DRAWS` simulated searches retrains.

    Each trial's validation score is drawn around its pilot mean with one run's noise (the
    task's seed variance plus the binomial noise of ``n_val`` images) over ``replicates``, and
    the trial that ``selection`` (:data:`pebench.selection.RULES`) ranks first among the drawn
    scores is retrained. A trial without an ``ok`` run (``NaN``: it diverged) is never retrained
    and counts as 0 where the ``smoothed`` rule weighs it as a neighbour. Both rules treat the
    pilot's trial means as the truth, so a pilot of one noisy run per trial favours ``max``.
    """
    means = np.asarray(pilot.trials, dtype=float)
    ok = np.isfinite(means)
    m = np.where(ok, means, 100.0 * DIVERGED_SCORE)
    weights = np.eye(len(m))
    if selection != "max" and len(pilot.grid) == len(m):
        weights = np.asarray(smoothing_weights(pilot.grid, selection))
    seed_var = float(np.var(pilot.values, ddof=1)) if len(pilot.values) > 1 else 0.0
    n = n_val or pilot.n_val
    binomial = 100.0**2 * (m / 100) * (1 - m / 100) / n if n else np.zeros_like(m)
    sd = np.where(ok, np.sqrt((seed_var + binomial) / replicates), 0.0)
    rng = np.random.default_rng(seed)
    drawn = m[None, :] + sd[None, :] * rng.standard_normal((SEARCH_DRAWS, len(m)))
    # ties go to the smaller lr, as in the selection: the first index of the lr-sorted order
    order = (
        np.argsort([g[0] for g in pilot.grid], kind="stable")
        if len(pilot.grid) == len(m)
        else np.arange(len(m))
    )
    ranked = np.where(ok[None, :], np.round(drawn @ weights.T, 10), -np.inf)[:, order]
    return order[np.argmax(ranked, axis=1)]


def selection_variance(
    pilot: Pilot, replicates: int, n_val: int | None, seed: int = 0, selection: str = "max"
) -> float:
    """Variance (points²) of the retrained trial's score over simulated searches.

    See :func:`simulated_picks`; 0 for fewer than two selectable trials or pilot seeds.
    """
    means = np.asarray(pilot.trials, dtype=float)
    if np.isfinite(means).sum() < 2 or len(pilot.values) < 2:
        return 0.0
    picked = means[simulated_picks(pilot, replicates, n_val, seed, selection)]
    return float(np.var(picked))


class Model:
    """The pilot's rows on one suite, with what every design reuses computed once.

    Args:
        rows: per row, task -> :class:`Pilot`.
        weights: task -> weight in the ranking suite mean.
    """

    def __init__(self, rows: Sequence[dict[str, Pilot]], weights: dict[str, float]) -> None:
        self.rows, self.weights = list(rows), dict(weights)
        self.pairs = list(combinations(range(len(self.rows)), 2))
        self._paired: dict[tuple[int, int, str], tuple[float, float, int] | None] = {}
        for i, j in self.pairs:
            for t in self.weights:
                ca, cb = self.rows[i][t].correct, self.rows[j][t].correct
                ok = ca is not None and cb is not None and ca.shape[1] == cb.shape[1]
                self._paired[(i, j, t)] = (*paired_parts(ca, cb), ca.shape[1]) if ok else None

    def parts(self, i: int, j: int, design: Design) -> list[S.Part]:
        """The variance parts of ``M_i − M_j`` the leaderboard counts (seed + test)."""
        out: list[S.Part] = []
        for t, w in self.weights.items():
            for pilot in (self.rows[i][t], self.rows[j][t]):
                var = float(np.var(pilot.values, ddof=1))
                out.append((w * w * var / design.seeds, design.seeds - 1))
            paired = self._paired[(i, j, t)]
            if paired is not None:
                p, q, n_pilot = paired
                n = design.n_test or n_pilot
                out.append((w * w * (p + q / design.seeds) / n, n - 1))
        return out

    def selection(self, design: Design) -> list[float]:
        """Per row, the selection variance of its suite mean under ``design`` (points²)."""
        return [
            sum(
                w
                * w
                * selection_variance(
                    row[t], design.replicates, design.n_val, selection=design.selection
                )
                for t, w in self.weights.items()
            )
            for row in self.rows
        ]

    def resolvable(self, design: Design) -> tuple[float, float]:
        """``(median MDD over pairs: seed + test, the same with selection noise)``, points."""
        if not self.pairs:
            return math.nan, math.nan
        selection = self.selection(design)
        plain, noisy = [], []
        for i, j in self.pairs:
            parts = self.parts(i, j, design)
            plain.append(_mdd(parts))
            noisy.append(_mdd(parts, selection[i] + selection[j]))
        return float(np.median(plain)), float(np.median(noisy))


def _mdd(parts: Sequence[S.Part], extra: float = 0.0) -> float:
    var, df = S.welch_satterthwaite([*parts, (extra, math.inf)] if extra else parts)
    return S.mdd(S.Estimate(0.0, math.sqrt(var), df, 0.0, 0.0))


__all__ = [
    "SEARCH_DRAWS",
    "Design",
    "Pilot",
    "Model",
    "paired_parts",
    "selection_variance",
    "simulated_picks",
]
