"""``pebench compare A B``: one pair of leaderboard rows, with the rule behind its verdict.

The comparison is the table's own: the same suite table the leaderboard renders (same rows,
same records), the paired difference of suite means with its 95 % interval and p (Holm-adjusted
over the table's pairs, as rank (UB) and the tiers use it), the probability of improvement with
its interval, the per-task differences and the difference with each task left out. Its verdict
follows :data:`RULE`, which the README quotes. Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pebench.errors import UserError
from pebench.report import stats as S
from pebench.report.columns import short_task
from pebench.report.tables import SuiteTable

#: the practical threshold (points) a difference must reach to be called better, by default
THRESHOLD = 1.0
#: the rule behind a verdict (the README and ``pebench compare --help`` say the same)
RULE = (
    "A is called significantly better than B only when (1) both rows have at least "
    f"{S.MIN_SEEDS_FOR_CLAIMS} seeds on every task, (2) the Holm-adjusted p of their paired "
    "difference (over all pairs of the suite table) is below 0.05, so its interval excludes 0, "
    "(3) the difference reaches the practical threshold (default "
    f"{THRESHOLD:g} pt, --threshold), and (4) neither row has a selection on a grid edge or "
    "right below a cliff on any task; otherwise no claim is made and the reason is given"
)


@dataclass
class Comparison:
    """What ``pebench compare`` computes for one pair of rows on one suite.

    Attributes:
        suite: the suite.
        a: label of the first row.
        b: label of the second row.
        diff: ``M_a − M_b`` with its 95 % interval.
        p: two-sided p of the difference (unadjusted).
        p_holm: p adjusted over the table's pairs (Holm).
        pairs: pairs in the table (what Holm adjusts over).
        poi: P(A > B) (rliable's probability of improvement).
        poi_ci: its 95 % stratified bootstrap interval.
        per_task: task -> difference of the task means (points).
        leave_one_out: task -> the difference of suite means without that task.
        mdd: the pair's minimum detectable difference at 80 % power.
        seeds: (fewest seeds on a task of A, of B).
        flags: label -> flag kind -> tasks (edge and cliff block a claim).
        threshold: the practical threshold used.
        verdict: the one-line verdict.
    """

    suite: str
    a: str
    b: str
    diff: S.Estimate
    p: float
    p_holm: float
    pairs: int
    poi: float
    poi_ci: tuple[float, float]
    per_task: dict[str, float]
    leave_one_out: dict[str, float]
    mdd: float
    seeds: tuple[int, int]
    flags: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    threshold: float = THRESHOLD
    verdict: str = ""


def find(table: SuiteTable, name: str) -> int:
    """The index of the entry named ``name`` (its label, or its method when that is unique).

    Raises:
        UserError: no such row, or a method name several rows share (the labels are listed).
    """
    labels = [e.label for e in table.entries]
    if name in labels:
        return labels.index(name)
    hits = [i for i, e in enumerate(table.entries) if e.key[0] == name]  # the method
    if len(hits) == 1:
        return hits[0]
    shown = ", ".join(repr(label) for label in labels)
    why = "matches several rows" if hits else "is not a row"
    raise UserError(f"{name!r} {why} of suite {table.info.name!r}; rows: {shown}")


def _verdict(c: Comparison) -> str:
    """The one-line verdict of :data:`RULE`."""
    if not math.isfinite(c.diff.se):
        return "no claim: a task has a single seed, so the difference has no interval"
    few = [
        (lab, n) for lab, n in zip((c.a, c.b), c.seeds, strict=True) if n < S.MIN_SEEDS_FOR_CLAIMS
    ]
    if few:
        seeds = ", ".join(f"{lab} has {n}" for lab, n in few)
        return (
            f"no claim: significance needs at least {S.MIN_SEEDS_FOR_CLAIMS} seeds per task "
            f"({seeds}); the interval above is what the data say"
        )
    if not c.p_holm < S.ALPHA:
        return (
            f"no significant difference: Holm-adjusted p = {c.p_holm:.3g} ≥ {S.ALPHA:g} over "
            f"{c.pairs} pairs"
        )
    if abs(c.diff.value) < c.threshold:
        return (
            f"no claim: the difference ({c.diff.value:+.2f} pts) is below the practical "
            f"threshold of {c.threshold:g} pt"
        )
    blocked = [
        f"{lab}: {kind} on {', '.join(tasks)}"
        for lab, flags in c.flags.items()
        for kind, tasks in flags.items()
        if kind in ("edge", "cliff")
    ]
    if blocked:
        return "no claim: a selection is fragile (" + "; ".join(blocked) + ")"
    better, worse = (c.a, c.b) if c.diff.value > 0 else (c.b, c.a)
    return (
        f"{better} is significantly better than {worse} by {abs(c.diff.value):.2f} pts "
        f"(Holm-adjusted p = {c.p_holm:.3g})"
    )


def compare(table: SuiteTable, a: str, b: str, threshold: float = THRESHOLD) -> Comparison:
    """Compare rows ``a`` and ``b`` of ``table`` (see :class:`Comparison`).

    Raises:
        UserError: an unknown row, the same row twice, or a row without a complete suite mean.
    """
    ia, ib = find(table, a), find(table, b)
    if ia == ib:
        raise UserError(f"{a!r} and {b!r} are the same row of suite {table.info.name!r}")
    ea, eb = table.entries[ia], table.entries[ib]
    for e in (ea, eb):
        if math.isnan(e.rank):
            raise UserError(
                f"{e.label!r} has no complete suite mean on {table.info.name!r} (every task "
                "needs a final run): nothing to compare"
            )
    ra, rb = ea.stats.runs, eb.stats.runs
    diff, p_holm = table.pair(ea, eb)
    tasks = list(ra.weights)
    out = Comparison(
        suite=table.info.name,
        a=ea.label,
        b=eb.label,
        diff=diff,
        p=S.p_value(diff),
        p_holm=p_holm,
        pairs=len(table.stats.pairs),
        poi=S.probability_of_improvement(ra, rb),
        poi_ci=S.poi_interval(ra, rb),
        per_task={t: ra.tasks[t].mean - rb.tasks[t].mean for t in tasks},
        leave_one_out=(
            {t: S.difference(ra, rb, [u for u in tasks if u != t]).value for t in tasks}
            if len(tasks) > 1
            else {}
        ),
        mdd=S.mdd(diff),
        seeds=(ra.min_seeds, rb.min_seeds),
        flags={e.label: e.stats.flags for e in (ea, eb)},
        threshold=threshold,
    )
    out.verdict = _verdict(out)
    return out


def render(c: Comparison) -> str:
    """The text ``pebench compare`` prints."""
    d = c.diff
    lines = [
        f"pebench compare: {c.a} vs {c.b} on suite {c.suite} "
        f"(seeds: {c.seeds[0]} and {c.seeds[1]} per task at least)",
        f"  difference of suite means ({c.a} − {c.b}): {d.value:+.2f} pts, 95% CI "
        f"[{d.lo:+.2f}, {d.hi:+.2f}] (t, {d.df:.1f} df; test term {d.test_term}); "
        f"p = {c.p:.3g}, Holm-adjusted over {c.pairs} pairs: {c.p_holm:.3g}",
        f"  P({c.a} > {c.b}) = {c.poi:.2f}, 95% CI [{c.poi_ci[0]:.2f}, {c.poi_ci[1]:.2f}] "
        "(probability of improvement, stratified bootstrap)",
        "  per task: "
        + ", ".join(f"{short_task(t)} {v:+.2f}" for t, v in c.per_task.items())
        + f" ({sum(v > 0 for v in c.per_task.values())} of {len(c.per_task)} positive)",
    ]
    if c.leave_one_out:
        lines.append(
            "  leaving one task out: "
            + ", ".join(f"without {short_task(t)} {v:+.2f}" for t, v in c.leave_one_out.items())
        )
    lines.append(f"  resolvable for this pair: {c.mdd:.2f} pts (80 % power, α = 0.05 two-sided)")
    for label, flags in c.flags.items():
        if flags:
            text = "; ".join(
                f"{k}: {', '.join(short_task(t) for t in v)}" for k, v in flags.items()
            )
            lines.append(f"  flags of {label}: {text}")
    lines.append(f"verdict: {c.verdict}")
    return "\n".join(lines) + "\n"


__all__ = ["RULE", "THRESHOLD", "Comparison", "compare", "find", "render"]
