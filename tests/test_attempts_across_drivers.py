"""Two concurrent drivers execute a failing run ``TRIAL_ATTEMPTS`` times in all (issue 27, item 5).

Before: each driver applied its own attempts after the other's (14 executions instead of 8 for
the attacker's grid; 4x the run timeout for a ``timeout`` trial). The plugin below fails every
run in its training stage and appends one line per execution to a file, so the test counts
executions directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
from fakedist import install

from pebench.store import RunStore
from pebench.sweep.dispatch import TRIAL_ATTEMPTS

FAILING = textwrap.dedent("""
    import os
    from pebench.method import Method


    class AlwaysFails(Method):
        name = "always_fails"
        title = "Fails every run (test)"

        def attach(self, model):
            with open(os.environ["PEBENCH_TEST_COUNT"], "a") as fh:
                fh.write(f"{os.getpid()}\\n")
            raise RuntimeError("this method always fails")

        def expected_num_params(self, dims):
            return 0
""")


@pytest.mark.slow
def test_two_concurrent_drivers_execute_a_failing_trial_trial_attempts_times(tmp_path):
    eps = {"always_fails": "fails_mod:AlwaysFails"}
    plugin = install(tmp_path / "plugin", "pebench-fails", eps, {"fails_mod": FAILING})
    count = tmp_path / "executions.txt"
    env = dict(os.environ, PYTHONPATH=str(plugin), HF_HUB_OFFLINE="1")
    env["PEBENCH_TEST_COUNT"] = str(count)
    cmd = [sys.executable, "-m", "pebench.cli", "run", "--method", "always_fails", "--tasks",
           "demo/shapes", "--budget", "demo-smoke", "--weights", "random", "--seeds", "0",
           "--skip-checks", "--quiet", "--max-parallel", "1"]  # fmt: skip
    cmd += ["--results", str(tmp_path / "r")]
    drivers = []
    for _ in range(2):
        drivers.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True))  # fmt: skip
        time.sleep(0.5)
    outs = [d.communicate(timeout=600) for d in drivers]
    assert all(d.returncode in (0, 1) for d in drivers), outs
    trials = [r for r in RunStore(tmp_path / "r").rows() if r["phase"] == "search"]
    assert len(trials) == 2 and {r["status"] for r in trials} == {"failed"}
    executions = count.read_text().splitlines()
    assert len(executions) == len(trials) * TRIAL_ATTEMPTS, outs


def test_the_progress_counter_counts_runs_not_the_rows_of_their_retries(capsys):
    """A retried run delivers a row per attempt; the counter used to overrun (``[51/45]``)."""
    from datetime import datetime, timezone

    from pebench.commands.run import _progress_printer
    from pebench.sweep.plan import plan_sweep

    sweep = plan_sweep("linear", tasks="demo/shapes", budget="demo-smoke", weights="random",
                       seeds=[0], checks=False, load_weights=False)  # fmt: skip
    on_row = _progress_printer([sweep])
    now = datetime.now(timezone.utc).isoformat()
    trial = dict(sweep.search_specs(sweep.tasks[0])[0].base_row, created_at=now, val_top1=0.5)
    for attempt, status in ((1, "timeout"), (2, "ok")):
        on_row(dict(trial, attempt=attempt, status=status))
    lines = capsys.readouterr().err.splitlines()
    assert [line[:6] for line in lines] == ["[1/3] ", "[1/3] "], lines
