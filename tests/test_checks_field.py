"""The conformance gate of ``pebench run`` and what rows and the leaderboard say about it (#28.3).

The gate runs the whole conformance suite, so a plugin whose closed-form count or merge is wrong
(what ``pebench check`` fails) is refused before it runs; rows name the checks that passed; the
leaderboard marks rows whose method did not pass the checks their numbers rest on.
"""

from __future__ import annotations

import pytest
from broken_methods import MiscountedLoRA, WrongMergeLoRA
from report_rows import REG, write

from pebench.checks_field import LEGACY_CHECKS, passed_checks, passed_value, unverified
from pebench.conformance import CHECKS
from pebench.methods import registry
from pebench.report import leaderboard as lb
from pebench.sweep import plan


def test_the_gate_runs_the_whole_conformance_suite():
    assert plan.RUN_CHECKS == tuple(CHECKS)


class _CountAndMergeWrong(MiscountedLoRA, WrongMergeLoRA):
    """Fails ``param_count`` and ``merge`` only (the issue's plugin: 11 of 13 pass)."""

    name = "lora_count_merge_wrong"


@pytest.fixture
def bad_plugin():
    registry.register(_CountAndMergeWrong.name, _CountAndMergeWrong, origin="pebench-bad==0.1")
    yield _CountAndMergeWrong.name
    registry.unregister(_CountAndMergeWrong.name)


def test_a_plugin_failing_count_and_merge_is_refused_before_it_runs(bad_plugin, tmp_path):
    with pytest.raises(plan.ConformanceError) as err:
        plan.check_method(bad_plugin, tmp_path)
    msg = str(err.value)
    assert (
        "param_count: AssertionError: cls@32px: measured 4096 trainable parameters (the prepared "
        "model's trainable() set), declared 4097 (expected_num_params)" in msg
    )
    assert "merge: AssertionError: cls: merge error" in msg
    assert "\n" not in msg and not list(tmp_path.rglob("*.json"))  # a failure is not remembered


def test_rows_name_every_check_their_method_passed(tmp_path):
    sweep = plan.plan_sweep(
        "linear", tasks="demo/shapes", budget="demo-smoke", results_dir=tmp_path, seeds=[0]
    )
    value = sweep.static["checks"]
    assert value == "passed:" + ",".join(CHECKS)
    assert passed_checks(value) == tuple(CHECKS)
    skipped = plan.plan_sweep(
        "linear", tasks="demo/shapes", budget="demo-smoke", results_dir=tmp_path, checks=False
    )
    assert skipped.static["checks"] == "skipped" and passed_checks("skipped") == ()


@pytest.mark.parametrize(
    ("value", "method", "origin", "missing"),
    [
        (passed_value(tuple(CHECKS)), "ia3", "pebench-ia3==0.1", []),
        (passed_value(LEGACY_CHECKS), "ia3", "pebench-ia3==0.1", ["count", "merge"]),
        (passed_value([*LEGACY_CHECKS, "param_count"]), "ia3", "x==1", ["merge"]),
        ("passed", "ia3", "pebench-ia3==0.1", ["count", "merge"]),  # the gate of 6 checks
        ("passed", "lora", "builtin", []),  # shipped: every check runs in pebench's tests
        ("passed", "peft:lora", "peft==0.21.2", []),
        ("", "ia3", "x==1", ["count", "merge"]),
        ("skipped", "ia3", "x==1", []),  # marked `(checks skipped)` instead
    ],
)
def test_which_claim_checks_a_row_did_not_pass(value, method, origin, missing):
    assert unverified(value, method, origin) == missing


def test_the_leaderboard_calls_no_row_conformant_without_count_and_merge(tmp_path):
    for seed in range(2):
        for task in ("lbtest/alpha", "lbtest/beta"):
            write(tmp_path, task=task, seed=seed, checks="passed", method_origin="builtin")
            write(tmp_path, task=task, seed=seed, method="ia3", method_origin="pebench-ia3==0.1",
                  checks="passed")  # fmt: skip
            write(tmp_path, task=task, seed=seed, method="ia3_new", method_origin="x==1",
                  checks=passed_value(tuple(CHECKS)))  # fmt: skip
    md = lb.render_markdown(lb.aggregate(tmp_path), **REG)
    assert "| ia3 (count, merge unverified) ‡ |" in md  # ‡: a third-party plugin
    assert "| lora |" in md and "| ia3_new ‡ |" in md
    assert "(count, merge unverified): the method did not pass the conformance checks" in md
