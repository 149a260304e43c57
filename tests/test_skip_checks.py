"""``--skip-checks`` skips the conformance checks only (issue 27, low): the weights still load
before anything runs, so a bad weights file is one line and exit 2, not a sweep of failed rows."""

from __future__ import annotations

from pebench.cli import main


def test_a_bad_weights_file_is_refused_before_any_run_even_with_skip_checks(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    argv = ["run", "--method", "lora", "--tasks", "demo/shapes", "--budget", "demo-smoke",
            "--weights", str(bad), "--skip-checks", "--results", str(tmp_path / "r")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pebench: error: could not load weights file {bad}")
    assert not (tmp_path / "r").exists()  # nothing ran, nothing was written
