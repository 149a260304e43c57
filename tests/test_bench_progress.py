"""Measurement commands say what they cost before the long part, and how far they are (#28.5)."""

from __future__ import annotations

import re

import pytest

from pebench import harness
from pebench.budget import get_budget
from pebench.cli import main
from pebench.commands.bench import HARNESS_METHODS

TINY = {"backbone": "pebench_vit_test_cls", "image_size": 32, "batch_size": 8, "steps": 1}


def test_the_harness_bench_says_its_cost_after_one_round_then_each_method():
    lines: list[str] = []
    rows = harness.run_harness_bench(["linear", "lora"], rounds=1, say=lines.append, **TINY)
    assert [r.method for r in rows] == ["linear", "lora"]
    assert len(lines) == 3, lines
    assert re.fullmatch(
        r"2 method\(s\) x 2 rounds of 1 steps; the first round took \d+\.\d s: about \d+ s in all",
        lines[0],
    )
    assert re.fullmatch(r"\[1/2\] linear: \d+\.\d s; about \d+ s left", lines[1])
    assert re.fullmatch(r"\[2/2\] lora: \d+\.\d s", lines[2])


def test_the_harness_bench_measures_a_small_default(monkeypatch, capsys):
    seen = {}

    def fake(methods, **kw):
        seen["methods"], seen["say"] = methods, kw["say"]
        kw["say"]("2 method(s) x 6 rounds")
        return []

    monkeypatch.setattr(harness, "run_harness_bench", fake)
    assert main(["bench", "--harness", "--json"]) == 0
    assert seen["methods"] == HARNESS_METHODS.split(",") == ["linear", "lora"]
    err = capsys.readouterr().err
    assert "pebench bench --harness: 2 method(s) x 6 rounds" in err


def test_estimate_measure_says_what_one_method_costs_after_its_warm_up():
    lines: list[str] = []
    m = harness.measure(
        "linear", get_budget("demo-smoke"), "pebench_vit_test_cls", "cpu", 5, steps=1,
        say=lines.append,
    )  # fmt: skip
    assert m.train_images_per_s > 0
    assert len(lines) == 1 and re.fullmatch(
        r"linear: warm-up epoch of 1 steps took \d+\.\d s; about \d+ s more for this method",
        lines[0],
    )


@pytest.mark.parametrize(
    ("seconds", "text"), [(45.2, "45 s"), (200, "3 min"), (5400, "1.5 h"), (95 * 60, "1.6 h")]
)
def test_durations_read_as_words(seconds, text):
    assert harness.duration(seconds) == text
