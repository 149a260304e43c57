"""A user's own budget: a TOML or JSON file given to ``--budget PATH``, its id its content hash."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from pebench.cli import main
from pebench.errors import PebenchError
from pebench.store import RunStore
from tests.budgets import SMALL, budget_toml

#: a tiny budget: the micro ViT (embedded weights: offline), one lr, one epoch, one seed
TINY = textwrap.dedent("""\
    # a budget for tests
    epochs = 1
    warmup_epochs = 0
    batch_size = 32
    optimizer = "adamw"
    lr_grid = [1e-3]
    wd_grid = [1e-4]
    image_size = 32
    seeds = [0]
    search_seed = 0
    backbone = "pebench_vit_micro"
    subset = 64
    description = "tiny test budget"
""")
FILE_ID = re.compile(r"file:tiny@[0-9a-f]{12}")


def _write(folder, name, text):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _budget(path):
    from pebench.budget import get_budget

    return get_budget(str(path))


def test_the_id_hashes_the_values_not_their_spelling(tmp_path):
    base = _budget(_write(tmp_path, "tiny.toml", TINY))
    assert FILE_ID.fullmatch(base.id), base.id
    assert (base.epochs, base.lr_grid, base.seeds, base.backbone) == (
        1,
        (1e-3,),
        (0,),
        "pebench_vit_micro",
    )
    respelled = textwrap.dedent("""\
        backbone   = 'pebench_vit_micro'   # keys in another order, other quotes, comments
        subset = 64
        lr_grid = [ 0.001 ]
        wd_grid = [0.0001]
        seeds = [0]
        search_seed = 0
        image_size = 32
        optimizer = "adamw"
        precision = "auto"   # the default, written out
        batch_size = 32
        warmup_epochs = 0
        epochs = 1
        description = "tiny test budget"
    """)
    assert _budget(_write(tmp_path / "b", "tiny.toml", respelled)).id == base.id
    as_json = json.dumps({**SMALL, "description": "tiny test budget"}, indent=4)
    assert _budget(_write(tmp_path / "c", "tiny.json", as_json)).id == base.id


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("epochs = 1", "epochs = 2"),
        ("lr_grid = [1e-3]", "lr_grid = [2e-3]"),
        ("seeds = [0]", "seeds = [0, 1]"),
        ("subset = 64", "subset = 65"),
        ('backbone = "pebench_vit_micro"', 'backbone = "pebench_vit_test_cls"'),
        ("batch_size = 32", "batch_size = 32\ngrad_clip = 1.0"),
    ],
)
def test_any_value_changes_the_id(tmp_path, old, new):
    base = _budget(_write(tmp_path, "tiny.toml", TINY)).id
    edited = _budget(_write(tmp_path / "e", "tiny.toml", TINY.replace(old, new)))
    assert FILE_ID.fullmatch(edited.id) and edited.id != base


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        (
            "tiny.toml",
            ("epochs = 1", "epoch = 1"),
            "unknown key 'epoch' (did you mean 'epochs'?); allowed: epochs, warmup_epochs",
        ),
        (
            "tiny.toml",
            ("epochs = 1\n", ""),
            "missing key 'epochs'; required: epochs, warmup_epochs, batch_size",
        ),
        (
            "tiny.toml",
            ("lr_grid = [1e-3]", 'lr_grid = "1e-3"'),
            "key 'lr_grid' must be a non-empty list of at most 64 distinct numbers >= 1e-12, "
            "got '1e-3'",
        ),
        (
            "tiny.toml",
            ("batch_size = 32", "batch_size = 32.0"),
            "key 'batch_size' must be an integer >= 1 and <= 65536, got 32.0",
        ),
        (
            "tiny.toml",
            ("seeds = [0]", "seeds = [0, 0]"),
            "key 'seeds' must be a non-empty list of at most 1000 distinct integers within "
            "+-2147483647, got [0, 0]",
        ),
        (
            "tiny.toml",
            ('optimizer = "adamw"', 'optimizer = "adam"'),
            "key 'optimizer' must be one of 'adamw', 'sgd', got 'adam'",
        ),
        (
            "tiny.toml",
            ("epochs = 1", "epochs = 1\nwarmup = true"),
            "unknown key 'warmup'",
        ),
        (
            "tiny.toml",
            ("warmup_epochs = 0", "warmup_epochs = 3"),
            "key 'warmup_epochs' must be at most epochs (1), got 3",
        ),
        ("tiny.toml", ("epochs = 1", 'id = "demo-v2"\nepochs = 1'), "key 'id' is not allowed"),
        (
            "tiny.toml",
            ("subset = 64", "subset = 64\n[video]\nframes = 4"),
            "unknown key 'video.frames' (did you mean 'video.num_frames'?); allowed: video.num_",
        ),
        ("tiny.toml", ("epochs = 1", "epochs = "), "not valid TOML"),
        ("tiny.yaml", ("", ""), "unknown format '.yaml'; allowed: .toml, .json"),
    ],
)
def test_a_bad_budget_file_is_one_line_naming_the_key(tmp_path, capsys, name, edit, message):
    path = _write(tmp_path, name, TINY.replace(*edit) if edit[0] else TINY)
    results = tmp_path / "results"
    argv = ["run", "--method", "linear", "--tasks", "demo/shapes", "--budget", str(path)]
    assert main([*argv, "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pebench: error: budget file {path}: ") and err.count("\n") == 1
    assert message in err
    assert not results.exists()


def test_a_missing_file_and_an_unknown_id_are_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.toml"
    assert main(["status", "--method", "linear", "--budget", str(missing)]) == 2
    assert capsys.readouterr().err == f"pebench: error: budget file {missing}: not found\n"
    assert main(["status", "--method", "linear", "--budget", "demo-v9"]) == 2
    err = capsys.readouterr().err
    assert "unknown budget 'demo-v9'" in err and "or a budget file PATH ending in .toml" in err
    assert main(["status", "--method", "linear", "--budget", "file:tiny@0123456789ab"]) == 2
    assert "names the values of a budget file, not the file; pass --budget PATH" in (
        capsys.readouterr().err
    )


def test_a_budget_file_travels_with_its_runs_by_value(tmp_path):
    """Workers (forkserver children, DDP ranks, Slurm or Ray jobs) get the budget's values in
    the run spec: a process that never saw the file, nor any environment or cache copy of it,
    trains under the file's budget. (The old side channel, an environment variable and a cache
    copy, missed a forkserver started before planning: its runs failed.)"""
    from pebench.sweep.ddp import spec_from_json, spec_to_json
    from pebench.sweep.plan import plan_sweep

    path = _write(tmp_path, "tiny.toml", TINY)
    sweep = plan_sweep("linear", budget=str(path), tasks="demo/shapes", seeds=[0],
                       results_dir=tmp_path / "r", load_weights=False, checks=False)  # fmt: skip
    spec = sweep.search_specs(sweep.tasks[0])[0]
    path.unlink()  # gone: nothing may read it again
    probe = (
        "import sys; from pebench.sweep.ddp import spec_from_json; "
        "s = spec_from_json(sys.stdin.read()); b, t = s.resolved(); print(b.id, b.epochs, t.name)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEBENCH_")}
    out = subprocess.run([sys.executable, "-c", probe], input=spec_to_json(spec),
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert out.stdout.split() == [sweep.budget.id, "1", "demo/shapes"], out.stderr
    assert spec_from_json(spec_to_json(spec)) == spec and spec.budget == sweep.budget


def test_the_api_raises_a_pebench_error(tmp_path):
    with pytest.raises(PebenchError, match="budget file .*unknown key 'epoch'"):
        _budget(_write(tmp_path, "tiny.toml", TINY.replace("epochs = 1", "epoch = 1")))


def _pebench(*argv, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "pebench.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_pebench_run_with_a_budget_file_records_its_hash_and_resumes(tmp_path):
    path = _write(tmp_path, "tiny.toml", TINY)
    budget_id = _budget(path).id
    sel = ["--method", "linear", "--tasks", "demo/shapes", "--budget", "tiny.toml"]
    out = _pebench("run", *sel, "--results", "r", "--quiet", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = RunStore(tmp_path / "r").rows()
    assert sorted(r["phase"] for r in rows) == ["final", "search"]
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    assert {r["budget"] for r in rows} == {budget_id}
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "r" / "runs").glob("*.csv")}
    again = _pebench("run", *sel, "--results", "r", "--quiet", cwd=tmp_path)  # resumes
    assert again.returncode == 0, again.stdout + again.stderr
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "r" / "runs").glob("*.csv")} == files
    status = _pebench("status", *sel, "--results", "r", "--json", cwd=tmp_path)
    assert json.loads(status.stdout)["total"]["done"] == 2, status.stdout + status.stderr
    path.write_text(TINY.replace("lr_grid = [1e-3]", "lr_grid = [2e-3]"))  # a new budget
    edited = _pebench("status", *sel, "--results", "r", "--json", cwd=tmp_path)
    assert json.loads(edited.stdout)["total"]["done"] == 0, edited.stdout + edited.stderr
    assert _budget(path).id != budget_id


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            dict(lr_grid=[1e-3 * (1 + i) for i in range(65)]),
            "'lr_grid' must be a non-empty list of at most 64",
        ),
        (
            dict(
                lr_grid=[1e-3 * (1 + i) for i in range(40)],
                wd_grid=[1e-4 * (1 + i) for i in range(40)],
            ),
            "has 1600 trials; a budget may have at most 256",
        ),
        (
            dict(lr_grid=[5e-324]),
            "'lr_grid' must be a non-empty list of at most 64 distinct numbers >= 1e-12",
        ),
        (dict(seeds=[10**100]), "'seeds' must be"),
        (dict(image_size=10**6), "'image_size' must be an integer >= 1 and <= 4096"),
        (dict(search_replicates=1000), "'search_replicates' must be an integer >= 1 and <= 32"),
    ],
    ids=["long-grid", "many-trials", "subnormal-lr", "huge-seed", "huge-image", "replicates"],
)
def test_budgets_without_bounds_are_refused_in_one_line(tmp_path, fields, message):
    import time

    t0 = time.perf_counter()
    with pytest.raises(PebenchError, match=re.escape(message)) as info:
        _budget(_write(tmp_path, "b.toml", budget_toml(**fields)))
    assert "\n" not in str(info.value) and time.perf_counter() - t0 < 1.0


def test_a_ten_million_trial_budget_is_refused_fast_and_small(tmp_path):
    """The issue's figure: 10**7 trials (3,163 x 3,163) refused in < 1 s, in < 200 MB."""
    import resource
    import time

    lrs = ", ".join(f"{1e-3 + i * 1e-6:.7g}" for i in range(3163))
    text = budget_toml(lr_grid=None, wd_grid=None) + f"lr_grid = [{lrs}]\nwd_grid = [{lrs}]\n"
    path = _write(tmp_path, "huge.toml", text)
    t0, rss0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(PebenchError, match="at most 64 distinct"):
        _budget(path)
    assert time.perf_counter() - t0 < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 200 * 1024  # KiB


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "deep-json", "big"])
def test_files_that_are_not_budget_files_are_refused_without_hanging(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "b.toml"
        os.mkfifo(path)
        message = "not a regular file"
    elif kind == "dev-zero":
        path = tmp_path / "z.json"
        path.symlink_to("/dev/zero")
        message = "not a regular file"
    elif kind == "deep-json":
        path = _write(tmp_path, "d.json", "[" * 30_000 + "]" * 30_000)
        message = "nested too deeply"
    else:
        path = _write(tmp_path, "big.toml", TINY + "#" * 70_000 + "\n")
        message = "a budget file may have 65536"
    with pytest.raises(PebenchError, match=message) as info:
        _budget(path)
    assert "\n" not in str(info.value)
