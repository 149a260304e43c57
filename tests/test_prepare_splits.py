"""Cache damage found before the first run: every split a sweep reads is checked at planning."""

import numpy as np
import pytest
from noah_data import make_noah, small_spec

from pebench.datasets import get_task
from pebench.datasets.cache import CacheError, prepare


@pytest.fixture
def small(tmp_path):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    make_noah(raw, "kitti", {"train800": 8, "val200": 4, "test": 8}, 4)
    spec = small_spec()
    prepare([spec], "noah", raw, cache, 8)
    return spec, cache, cache / "vtab/kitti/8px"


def test_check_splits_passes_on_a_whole_cache(small):
    from pebench.datasets import check_data
    from pebench.datasets.cache import check_splits

    spec, cache, _ = small
    check_splits(spec, cache, 8)
    check_data([spec], cache, 8)  # through the task's loader
    check_data(get_task("demo/shapes"), None, 32)  # a family without a check: nothing to do


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: _truncate(f / "test.images.npy", 100), r"test.images.npy is truncated \("),
        (lambda f: _truncate(f / "test.labels.npy", 8), r"test.labels.npy is truncated \("),
        (lambda f: (f / "test.digests.npy").unlink(), r"test.digests.npy is missing"),
        (lambda f: (f / "val200.images.npy").unlink(), r"split 'val200': .* is missing"),
        (lambda f: _append(f / "train800.images.npy"), r"longer than its header says"),
        (lambda f: np.save(f / "test.labels.npy", np.zeros(7, np.int64)), r"holds int64 \[7\]"),
        (lambda f: (f / "test.images.npy").write_bytes(b"junk"), r"cannot be read"),
    ],
)
def test_missing_or_truncated_split_is_found_cheaply(small, damage, message):
    from pebench.datasets.cache import check_splits

    spec, cache, folder = small
    damage(folder)
    with pytest.raises(CacheError, match=message) as info:
        check_splits(spec, cache, 8)
    assert "prepare the cache again with --force: pebench prepare vtab/kitti" in str(info.value)


def _truncate(path, nbytes):
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size - nbytes)


def _append(path):
    with open(path, "ab") as fh:
        fh.write(b"\0" * 10)


@pytest.mark.slow
def test_pebench_run_stops_before_any_run_on_a_truncated_test_split(tmp_path, capsys):
    """The search would train for hours before the finals found the damage: refused up front."""
    from pebench.cli import main

    raw, cache, results = tmp_path / "raw", tmp_path / "cache", tmp_path / "results"
    make_noah(raw, "kitti", {"train800": 800, "val200": 200, "test": 711}, 4)
    prepare("vtab/kitti", "noah", raw, cache, 32)  # demo-smoke's image size
    images = cache / "vtab/kitti/32px/test.images.npy"
    _truncate(images, 32 * 32 * 3 * 10)
    argv = ["run", "--method", "linear", "--tasks", "vtab/kitti", "--budget", "demo-smoke"]
    argv += ["--weights", "random", "--data-dir", str(cache), "--results", str(results)]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"pebench: error: task 'vtab/kitti', split 'test': {images} is truncated")
    assert not list(results.rglob("*.csv"))  # no run row, not even a failure row
