"""Seeds from a precision target: the design arithmetic against a hand computation.

A small synthetic pilot (three rows on the demo suite's four tasks, three seeds, records and
search rows) is written through the run store; ``pebench estimate --precision`` must print, for
each design, the median over pairs of rows of the minimum detectable difference computed here
from the definitions (scipy's t quantiles, the paired per-image parts solved by hand).
"""

import math
import re
from itertools import combinations

import numpy as np
import pytest
from scipy import stats

from pebench import record as REC
from pebench import results as R
from pebench.cli import main
from pebench.report.precision import (
    Design,
    Model,
    Pilot,
    paired_parts,
    selection_variance,
    simulated_picks,
)
from pebench.selection import select_trial
from pebench.store import RunStore

TASKS = ("demo/shapes", "demo/texture", "demo/count", "demo/orientation")
N_TEST, N_VAL = 100, 40


def test_paired_parts_solve_the_two_averages():
    rng = np.random.default_rng(0)
    a = rng.random((3, 50)) < 0.6
    b = rng.random((3, 50)) < 0.5
    single = np.mean([np.var(100.0 * (a[s].astype(float) - b[s]), ddof=1) for s in range(3)])
    mean = np.var(100.0 * (a.mean(0) - b.mean(0)), ddof=1)
    p, q = paired_parts(a, b)
    assert p + q == pytest.approx(single) and p + q / 3 == pytest.approx(mean)


def test_selection_variance_by_cases():
    dominant = Pilot(np.array([50.0, 52.0, 48.0]), None, [10.0, 90.0], 1000)
    assert selection_variance(dominant, 1, None) == 0.0  # the search always retrains trial 1
    # two trials 10 pts apart drowned in noise: a coin flip between 50 and 60 -> var ~ 25
    coin = Pilot(np.array([0.0, 100.0, 50.0]), None, [50.0, 60.0], 10**6)
    assert selection_variance(coin, 1, None) == pytest.approx(25.0, rel=0.1)
    assert selection_variance(coin, 3, None) < selection_variance(coin, 1, None)  # replicates


@pytest.mark.parametrize("rule", ["max", "smoothed"])
def test_a_noiseless_simulated_search_retrains_what_the_selection_retrains(rule):
    """The estimator's simulated searches apply the budget's rule as :mod:`pebench.selection`."""
    rng = np.random.default_rng(3)
    lrs = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
    for _ in range(200):
        means = rng.choice([20.0, 40.0, 60.0, 70.0, 80.0, math.nan], size=len(lrs))
        if np.isfinite(means).sum() < 2:
            continue
        rows = [
            dict(trial=i, lr=lr, weight_decay=1e-4, seed=0, run_id=str(i), selection_rule=rule,
                 val_top1=m / 100, status="ok" if math.isfinite(m) else "diverged")
            for i, (lr, m) in enumerate(zip(lrs, means, strict=True))
        ]  # fmt: skip
        pilot = Pilot(np.array([50.0, 50.0]), None, list(means), None, [(lr, 1e-4) for lr in lrs])
        picks = simulated_picks(pilot, 1, None, selection=rule)
        assert set(picks.tolist()) == {select_trial(rows)["trial"]}


def test_smoothing_cuts_the_selection_variance_of_a_spiky_curve():
    # a lone spike among poor rungs next to a plateau: the max rule flips between them
    spiky = [30.0, 72.0, 30.0, 69.0, 70.0, 69.0]
    grid = [(lr, 1e-4) for lr in (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)]
    pilot = Pilot(np.array([0.0, 6.0]), None, spiky, 400, grid)
    plain = selection_variance(pilot, 3, None, selection="max")
    smooth = selection_variance(pilot, 3, None, selection="smoothed")
    assert smooth < plain / 4


def _pilot_rows(seed=1):
    rng = np.random.default_rng(seed)
    hard = {t: rng.random(N_TEST) for t in TASKS}  # shared image difficulty: pairs are paired
    rows = []
    for skill in (0.55, 0.6, 0.7):
        row = {}
        for t in TASKS:
            acc = skill + rng.normal(0, 0.04, 3)
            correct = np.stack([(hard[t] < a) ^ (rng.random(N_TEST) < 0.05) for a in acc])
            trials = [100 * skill - 20, 100 * skill, 100 * skill - 3]
            row[t] = Pilot(100 * correct.mean(1), correct, trials, N_VAL)
        rows.append(row)
    return rows


def _hand_mdd(rows, seeds, n_test=None):
    weights = 1 / len(TASKS)
    out = []
    for a, b in combinations(rows, 2):
        parts = []
        for t in TASKS:
            for row in (a, b):
                parts.append((weights**2 * np.var(row[t].values, ddof=1) / seeds, seeds - 1))
            p, q = paired_parts(a[t].correct, b[t].correct)
            n = n_test or N_TEST
            parts.append((weights**2 * (p + q / seeds) / n, n - 1))
        var = sum(v for v, _ in parts)
        df = var**2 / sum(v * v / d for v, d in parts)
        out.append((stats.t.ppf(0.975, df) + stats.t.ppf(0.8, df)) * math.sqrt(var))
    return float(np.median(out))


@pytest.mark.parametrize(("seeds", "n_test"), [(3, None), (10, None), (5, 2000)])
def test_the_resolvable_difference_is_the_hand_computation(seeds, n_test):
    rows = _pilot_rows()
    model = Model(rows, dict.fromkeys(TASKS, 0.25))
    plain, noisy = model.resolvable(Design(seeds, 1, n_test))
    assert plain == pytest.approx(_hand_mdd(rows, seeds, n_test), rel=1e-9)
    assert noisy >= plain


def _write_pilot(folder, rows):
    store = RunStore(folder)
    for k, row in enumerate(rows):
        for t, pilot in row.items():
            base = {c: "" for c in R.COLUMNS}
            base.update(
                method=f"m{k}", preset="default", method_config="{}", method_origin="builtin",
                method_reconstruction=False, backbone="pebench_vit_micro", weights="w",
                task=t, suite="demo", task_group="natural", task_version="demo-1",
                data_format="procedural", data_manifest="man", budget="pilot-b",
                pebench_version="0", git_dirty=False, weight_decay=1e-4, status="ok",
                test_top1=float("nan"), val_top1=float("nan"), wall_time_s=2.0,
            )  # fmt: skip
            lrs = [1e-3, 1e-2, 1e-1]
            for i, val in enumerate(pilot.trials):
                correct = np.arange(N_VAL) < round(val / 100 * N_VAL)
                val_top1 = float(correct.mean())
                srow = dict(base, phase="search", trial=i, lr=lrs[i], seed=0, val_top1=val_top1)
                srow["run_id"] = R.run_id(srow)
                store.record(srow, REC.make(srow["run_id"], "search", [0] * N_VAL, correct))
            for s, correct in enumerate(pilot.correct):
                frow = dict(base, phase="final", trial=1, lr=lrs[1], seed=s)
                frow.update(test_top1=float(correct.mean()), val_top1=float(pilot.trials[1] / 100))
                frow["run_id"] = R.run_id(frow)
                store.record(frow, REC.make(frow["run_id"], "final", [0] * N_TEST, correct))


def test_the_cli_prints_the_designs_and_the_cheapest_reaching_the_target(tmp_path, capsys):
    rows = _pilot_rows()
    _write_pilot(tmp_path, rows)
    argv = ["estimate", "--method", "all", "--tasks", "demo", "--results", str(tmp_path)]
    assert main([*argv, "--precision", "5"]) == 0
    out = capsys.readouterr().out
    table = {
        (int(m[1]), int(m[2])): (int(m[3]), float(m[4]), float(m[5]))
        for m in re.finditer(
            r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+[\d.]+\s+[\d.]+$", out, re.M
        )
    }
    assert table[(3, 1)][2] == pytest.approx(_hand_mdd(rows, 3), abs=0.01)
    assert table[(10, 1)][2] == pytest.approx(_hand_mdd(rows, 10), abs=0.01)
    assert table[(10, 3)][0] == 4 * (3 * 3 + 10)  # runs per method: tasks x (trials x R + S)
    assert table[(5, 1)][1] == pytest.approx(4 * (3 + 5) * 2.0 / 3600, abs=0.01)
    cheapest = min((h, k) for k, (_, h, mdd) in table.items() if mdd <= 5)[1]
    assert f"cheapest design reaching 5 pts: {cheapest[0]} seeds, {cheapest[1]}" in out
    assert main([*argv, "--precision", "1"]) == 0  # nothing reaches 1 pt: it says what would
    assert "no design above reaches 1 pts" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--precision", "0"], "--precision 0.0: expected a number of points > 0"),
        (["--precision", "3", "--test-images", "0"], "--test-images must be >= 1"),
        (["--precision", "3", "--tasks", "vtab"], "--tasks 'vtab': name one suite"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, extra, message):
    _write_pilot(tmp_path, _pilot_rows())
    argv = ["estimate", "--method", "all", "--results", str(tmp_path), "--tasks", "demo", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
