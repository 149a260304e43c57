"""Built-in suites register through the checks plugins pass (``check_suite``), nothing less.

Before, ``register_suite`` (the built-ins' path) checked only duplicate names and roles: a
built-in task id such as ``x/../y`` or a description with a newline went through, while the
same suite from a plugin was refused.
"""

from dataclasses import replace

import pytest

from pebench.datasets.catalog import get_suite, suites, tasks
from pebench.datasets.spec import SUITES, TASKS, Suite, register_suite
from pebench.registry import RegistryError


def _pair(name="chk", task_name=None, **task_changes):
    real = tasks()["demo/shapes"]
    spec = replace(real, name=task_name or f"{name}/one", suite=name, **task_changes)
    return Suite(name=name, tasks=(spec.name,), aggregate="mean", default_budget="demo-v3",
                 description="a checked suite"), [spec]  # fmt: skip


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        (_pair(task_name="chk/../etc"), "task id 'chk/../etc' of suite 'chk' is not usable"),
        (_pair(group="a\nb"), "group 'a\\nb'; allowed: up to 40 letters"),
        (_pair(name="chk", task_name="other/one"), "task ids are 'chk/<task>'"),
        (_pair(name="demo"), "duplicate suite name 'demo'"),
    ],
)
def test_register_suite_refuses_what_a_plugin_would_be_refused_and_adds_nothing(pair, message):
    before_suites, before_tasks = dict(suites()), dict(TASKS)
    with pytest.raises(RegistryError) as err:
        register_suite(*pair)
    assert message in str(err.value)
    assert SUITES == before_suites and TASKS == before_tasks


def test_every_built_in_suite_passed_the_checks_and_extra_tasks_are_run_by_id():
    assert {"demo", "demo-ref", "vtab", "fgvc", "fewshot", "video"} <= set(suites())
    video = get_suite("video")
    # HMDB51's other two official splits are tasks of the suite outside its table
    extra = sorted(t for t in tasks() if t.startswith("video/") and t not in video.tasks)
    assert extra == ["video/hmdb51_split2", "video/hmdb51_split3"]
