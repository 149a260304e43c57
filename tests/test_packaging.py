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


def test_the_timm_floor_is_the_version_ci_tests():
    """pyproject's lower bound on timm is the version .ci/lowest-timm installs and tests."""
    import re

    pin = re.search(r'"timm>=([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    floor = re.search(r"^TIMM_FLOOR=([0-9.]+)$", (ROOT / ".ci" / "lowest-timm").read_text(), re.M)
    assert pin and floor
    assert pin[1] == floor[1]
    assert tuple(map(int, pin[1].split("."))) >= (1, 0, 23)  # older: no meta-device ViT-B
