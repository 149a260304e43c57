"""Independent computations of the leaderboard's statistics, written from their definitions.

Used by the statistics tests to check :mod:`pebench.report.stats` and the committed table:
plain loops, scipy's distributions, nothing imported from the code under test.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
from scipy import stats


def interval(tasks: dict[str, tuple[np.ndarray, np.ndarray | None]], weights: dict[str, float]):
    """``(mean, lo, hi)``: the suite mean's 95 % t interval with Welch-Satterthwaite df.

    ``tasks``: task -> (seed accuracies in %, bool correctness (seeds, images) or None).
    """
    parts, value = [], 0.0
    for t, w in weights.items():
        x, correct = tasks[t]
        value += w * float(np.mean(x))
        parts.append((w**2 * float(np.var(x, ddof=1)) / len(x), len(x) - 1))
        if correct is not None:
            cbar = correct.mean(axis=0)
            parts.append((w**2 * 1e4 * float(np.var(cbar, ddof=1)) / len(cbar), len(cbar) - 1))
    var = sum(v for v, _ in parts)
    df = var**2 / sum(v**2 / d for v, d in parts)
    half = stats.t.ppf(0.975, df) * math.sqrt(var)
    return value, value - half, value + half


def paired_p(a, b, weights) -> tuple[float, float]:
    """``(difference of suite means, two-sided p)`` with the paired per-image test term."""
    parts, value = [], 0.0
    for t, w in weights.items():
        (xa, ca), (xb, cb) = a[t], b[t]
        value += w * (float(np.mean(xa)) - float(np.mean(xb)))
        for x in (xa, xb):
            parts.append((w**2 * float(np.var(x, ddof=1)) / len(x), len(x) - 1))
        d = ca.mean(axis=0) - cb.mean(axis=0)
        parts.append((w**2 * 1e4 * float(np.var(d, ddof=1)) / len(d), len(d) - 1))
    var = sum(v for v, _ in parts)
    df = var**2 / sum(v**2 / dd for v, dd in parts)
    return value, float(2 * stats.t.sf(abs(value) / math.sqrt(var), df))


def holm(p: list[float]) -> list[float]:
    """Holm: the i-th smallest p times (m - i + 1), made monotone, capped at 1."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    for k, i in enumerate(order):
        adjusted[i] = min(1.0, max((m - j) * p[order[j]] for j in range(k + 1)))
    return adjusted


def ub_ranks_and_tiers(rows, weights, means) -> tuple[list[int], list[int]]:
    """Rank (UB) and greedy tiers by brute force over every pair (Holm over all pairs)."""
    keys = list(combinations(range(len(rows)), 2))
    tests = [paired_p(rows[i], rows[j], weights) for i, j in keys]
    adjusted = holm([p for _, p in tests])
    better: dict[int, set[int]] = {i: set() for i in range(len(rows))}
    for (i, j), (d, _), q in zip(keys, tests, adjusted, strict=True):
        if q < 0.05 and d != 0:
            hi, lo = (i, j) if d > 0 else (j, i)
            better[lo].add(hi)
    left, tier, tiers = set(range(len(rows))), 0, {}
    while left:
        tier += 1
        top = max(left, key=lambda i: (means[i], -i))
        for i in [i for i in left if i == top or top not in better[i]]:
            tiers[i] = tier
            left.discard(i)
    return [1 + len(better[i]) for i in range(len(rows))], [tiers[i] for i in range(len(rows))]
