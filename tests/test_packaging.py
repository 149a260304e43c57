"""The distribution exposes `pebench` only: no generic top-level names."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_has_only_the_pebench_package(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("pebench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"pebench", next(t for t in top if t.endswith(".dist-info"))}
    for generic in ("benchmark", "methods", "datasets", "tests"):
        assert not any(n.startswith(generic + "/") for n in names), generic
    assert "pebench/methods/lora.py" in names
    assert "pebench/datasets/demo.py" in names
    assert "pebench/run.py" in names
    assert "pebench/sweep/dispatch.py" in names and "pebench/report/leaderboard.py" in names


def test_import_names_resolve_into_the_repo_folders():
    import pebench
    import pebench.datasets
    import pebench.methods

    assert Path(pebench.__file__).parent.name == "benchmark"
    assert Path(pebench.methods.__file__).parent.name == "methods"
    assert Path(pebench.datasets.__file__).parent.name == "datasets"
