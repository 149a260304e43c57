"""The command line: outputs, exit codes, and bad input refused before anything is written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pebench.cli import main

#: the template method plugin of docs/plugins.md, an installed distribution (tests/method_plugin)
PLUGIN = Path(__file__).resolve().parent / "method_plugin"


def test_params_lora_vit_b16_json(capsys):
    assert (
        main(
            [
                "params",
                "--method",
                "lora",
                "--backbone",
                "vit_base_patch16_224",
                "--num-classes",
                "100",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["params_method"] == 294_912 and out["params_head"] == 76_900
    assert out["params_backbone"] == 85_798_656 and out["params_method_formula"] == 294_912


def test_params_set_changes_the_count(capsys):
    assert (
        main(
            [
                "params",
                "--method",
                "lora",
                "--backbone",
                "vit_base_patch16_224",
                "--set",
                "r=4",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["params_method"] == 36_864 * 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--method", "lorra"], "Did you mean 'lora'"),
        (["run", "--method", "lora", "--tasks", "demo/shape"], "Did you mean 'demo/shapes'"),
        (["run", "--method", "lora", "--budget", "demo-v9"], "unknown budget 'demo-v9'"),
        (
            ["run", "--method", "lora", "--backbone", "vit_bse_patch16_224"],
            "Did you mean vit_base_patch16_224",
        ),
        (
            ["run", "--method", "lora", "--set", "rank=2"],
            "unknown config key 'rank'; allowed fields: r: int",
        ),
        (["run", "--method", "lora", "--set", "r=two"], "bad value 'two' for config key 'r'"),
        (
            ["run", "--method", "lora", "--weights", "/no/such/file.safetensors"],
            "/no/such/file.safetensors",
        ),
        (["params", "--method", "nope"], "unknown method 'nope'"),
        (["run", "--method", "lora", "--threads", "-1"], "--threads must be >= 1, got -1"),
        (["run", "--method", "lora", "--timeout", "-5"], "--timeout must be a positive number"),
        (["run", "--method", "lora", "--timeout", "0"], "--timeout must be a positive number"),
        (["run", "--method", "lora", "--set", "dropout=7"], "dropout must be in [0, 1), got 7.0"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, argv, message):
    results = tmp_path / "results"
    code = main([*argv, "--results", str(results)] if argv[0] == "run" else argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("pebench: error:")
    assert not results.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seeds", ","], "--seeds expects distinct integers like 0,1,2; got ','"),
        (["--seeds", "0,0"], "--seeds expects distinct integers like 0,1,2; got '0,0'"),
        (["--device", "bogus"], "--device expects auto, cpu, cuda or cuda:N; got 'bogus'"),
        (["--device", "cuda:7"], "--device cuda:7: this machine has"),
    ],
)
def test_bad_run_options_are_refused_by_the_parser(tmp_path, capsys, argv, message):
    """Each used to make every run write a failure row (or was silently ignored)."""
    if "cuda" in argv[-1]:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 7:
            pytest.skip("this machine has 8 GPUs")
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--method", "lora", *argv, "--results", str(tmp_path / "r")])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_closed_pipe_ends_the_listing_quietly(tmp_path, monkeypatch):
    """`pebench list tasks | head` used to end in a BrokenPipeError traceback."""

    class ClosedPipe:
        def __init__(self, fd):
            self.fd = fd

        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            return self.fd

        def flush(self):
            pass

    with open(tmp_path / "out", "w") as sink:
        monkeypatch.setattr(sys, "stdout", ClosedPipe(sink.fileno()))
        assert main(["list", "tasks"]) == 141  # no exception escapes


def test_list_commands(capsys):
    for what in ("methods", "tasks", "suites", "budgets"):
        assert main(["list", what, "--json"]) == 0
        items = json.loads(capsys.readouterr().out)
        assert items
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "lv_adapter" in out and "RECONSTRUCTION" in out


def test_malformed_result_csv_is_named_and_nothing_written(tmp_path, capsys):
    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    (runs / "abc.csv").write_text("run_id,phase\nabc,final\n")
    board = tmp_path / "leaderboard.md"
    code = main(["leaderboard", "--results", str(tmp_path / "results"), "--output", str(board)])
    assert code == 2
    assert "abc.csv" in capsys.readouterr().err
    assert not board.exists() and not (tmp_path / "results" / "results.csv").exists()


def test_leaderboard_does_not_import_torch_or_pandas(tmp_path):
    """The report runs on plain rows: neither the accelerator stack nor a data frame library."""
    (tmp_path / "runs").mkdir()
    code = (
        "import sys; from pebench.cli import main; "
        f"rc = main(['leaderboard', '--results', {str(tmp_path)!r}, '--output', "
        f"{str(tmp_path / 'lb.md')!r}]); assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'pandas' not in sys.modules, 'pandas imported'; sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "lb.md").read_text().startswith("<!-- GENERATED")


@pytest.mark.parametrize("where", ["resluts", "/nonexistent/results"])
def test_leaderboard_of_a_missing_results_folder_exits_2_and_changes_nothing(
    tmp_path, monkeypatch, capsys, where
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "leaderboard.md").write_text("the committed board\n")
    assert main(["leaderboard", "--results", where]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pebench: error: no results folder") and "runs" in err
    assert (tmp_path / "leaderboard.md").read_text() == "the committed board\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaderboard.md"]
    assert not Path("/nonexistent").exists()
    assert main(["leaderboard", "--results", where, "--check"]) == 2


def test_bench_reports_ratios_against_linear(capsys):
    assert (
        main(
            [
                "bench",
                "--methods",
                "lora,adaptformer",
                "--backbone",
                "pebench_vit_test_cls",
                "--rounds",
                "2",
                "--steps",
                "1",
                "--batch-size",
                "4",
                "--json",
            ]
        )
        == 0
    )
    rows = {r["method"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"linear", "lora", "adaptformer"}
    assert rows["linear"]["train_ratio"] == 1.0 and rows["linear"]["eval_ratio"] == 1.0
    assert (
        rows["lora"]["merged_eval_ratio"] > 0 and rows["adaptformer"]["merged_eval_ratio"] is None
    )
    assert rows["lora"]["params_method"] == 2 * 4 * 64 * 8
    assert rows["lora"]["flops_per_image"] > rows["linear"]["flops_per_image"]
    assert rows["lora"]["checkpoint_bytes"] > rows["linear"]["checkpoint_bytes"]
    for r in rows.values():  # every ratio comes with the spread of its per-round ratios
        q1, q3 = r["train_iqr"]
        assert q1 <= r["train_ratio"] <= q3 and len(r["eval_iqr"]) == 2


# --------------------------------------------------------------------- answers without torch --
@pytest.mark.parametrize(
    ("argv", "code", "expected"),
    [
        (["--version"], 0, "pebench 0.1.0"),
        (["list", "methods"], 0, "lv_adapter"),
        (["list", "budgets"], 0, "demo-v1"),
        (["list", "tasks", "--suite", "vtab"], 0, "vtab/svhn"),
        (["run", "--method", "lroa"], 2, "Did you mean 'lora'?"),
        (["run", "--method", "lora", "--set", "rr=3"], 2, "unknown config key 'rr'"),
        (["run", "--method", "lora.big"], 2, "unknown preset 'big'"),
        (["run", "--method", "lora", "--set", "r8"], 2, "--set expects KEY=VALUE"),
        (["run", "--method", "lora", "--tasks", "demo/nope"], 2, "unknown suite or task"),
        (["run", "--method", "lora", "--budget", "demo-v9"], 2, "unknown budget 'demo-v9'"),
        (["status", "--method", "lroa"], 2, "unknown method 'lroa'"),
    ],
)
@pytest.mark.parametrize("plugin", [False, True], ids=["bare", "with-method-plugin"])
def test_answers_that_need_no_model_import_no_torch(argv, code, expected, plugin, tmp_path):
    """--help-speed answers: nothing heavy is imported before the answer (a fresh process).

    Also with a third-party method plugin installed (the template of docs/plugins.md on
    ``PYTHONPATH``): plugins are listed from their entry points, never imported for an answer.
    """
    probe = (
        "import sys\n"
        "from pebench.cli import main\n"
        "try:\n"
        f"    rc = main({argv!r})\n"
        "except SystemExit as e:\n"
        "    rc = e.code\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'peft') if m in sys.modules)\n"
        "print('RC', rc, 'HEAVY', heavy)\n"
    )
    env = dict(os.environ)
    if plugin:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGIN), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env=env,
    )  # fmt: skip
    assert f"RC {code} HEAVY []" in out.stdout, out.stdout + out.stderr
    assert expected in out.stdout + out.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_list_methods_with_peft_probes_the_installed_peft(capsys):
    pytest.importorskip("peft")
    assert main(["list", "methods", "--peft", "--json"]) == 0
    names = [m["name"] for m in json.loads(capsys.readouterr().out)]
    assert "lora" in names and "peft:lora" in names
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "peft:lora" not in out and "pebench list methods --peft" in out


# ------------------------------------------------------------------ help texts, unknown tasks --
def _subparser(name):
    import argparse

    from pebench.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return parser, sub.choices[name]


def test_the_top_help_is_plain_text():
    from pebench.cli import build_parser

    text = build_parser().format_help()
    assert "``" not in text and ":mod:" not in text and ":func:" not in text
    assert "pebench run --method lora" in text


@pytest.mark.parametrize("command", ["params", "check", "bench"])
def test_every_option_of_params_check_bench_has_help(command):
    _, parser = _subparser(command)
    bare = [a.dest for a in parser._actions if not a.help]
    assert bare == [], f"pebench {command}: options without help text: {bare}"


def test_run_help_says_the_default_weights_are_the_budgets():
    _, parser = _subparser("run")
    text = " ".join(parser.format_help().split())
    assert "default: hub weights" not in text
    assert "default: the budget's weights" in text and "embedded checkpoint" in text
    assert "a budget file PATH" in text


def test_an_unknown_task_prints_close_matches_and_the_suites_not_every_task(capsys, tmp_path):
    argv = ["run", "--method", "lora", "--tasks", "vtab/cifr", "--results", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pebench: error: unknown suite or task")
    assert "Did you mean 'vtab/cifar'" in err
    assert "Suites: demo, demo-ref, fewshot, fgvc, video, vtab" in err
    assert "vtab/svhn" not in err and "fewshot/" not in err  # not the 100+ task ids
    assert not (tmp_path / "r").exists()


def test_a_seed_outside_the_seed_range_is_refused_at_plan_time(capsys, tmp_path):
    argv = ["run", "--method", "linear", "--seeds", "99999999999999999999",
            "--results", str(tmp_path / "r")]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--seeds expects at most 1000 integers within +-2147483647" in err
    assert not (tmp_path / "r").exists()
