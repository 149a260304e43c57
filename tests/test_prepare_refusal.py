"""A refused ``pebench prepare`` leaves the cache folder exactly as it found it.

The rule for bad input: one line, exit 2, nothing written. A prepare of several cache units (a
suite, or a list of tasks) used to install each unit as soon as it was decoded, so a bad image
in a later unit was refused only after the earlier units were installed: the command failed,
and new cache folders (and replaced caches) stayed behind.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from noah_data import Pixels, make_noah

from pebench.cli import main

#: two registered VTAB-1k tasks in small folders (prepared with --nonstandard-sizes)
KITTI = {"train800": 8, "val200": 4, "test": 8}
DTD = {"train800": 47, "val200": 47, "test": 47}


def _tree(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``: a file's content hash, ``dir`` or a link's target."""
    out = {}
    if not folder.exists():
        return out
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                out[rel] = f"link {os.readlink(path)}"
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """kitti (good) and dtd, whose 4th test image is not an image."""
    px = Pixels()
    make_noah(tmp_path / "raw", "kitti", KITTI, 4, px=px)
    dtd = make_noah(tmp_path / "raw", "dtd", DTD, 47, px=px)
    (dtd / "images/test/000003.jpg").write_bytes(b"this is not an image")
    return tmp_path / "raw"


def _prepare(raw: Path, tasks: str, *extra: str) -> int:
    argv = ["prepare", tasks, "--source", "noah", "--data-dir", str(raw), "--image-size", "8"]
    return main([*argv, "--nonstandard-sizes", "--quiet", *extra])


def _one_refusal(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("pebench: error: cannot decode image ")
    assert "dtd/images/test/000003.jpg" in lines[0]
    return lines[0]


def test_a_refused_prepare_into_a_new_cache_folder_leaves_nothing(raw, tmp_path, capsys):
    cache = tmp_path / "new" / "cache"
    assert _prepare(raw, "vtab/kitti,vtab/dtd", "--cache-dir", str(cache)) == 2
    _one_refusal(capsys)
    assert not (tmp_path / "new").exists()  # no folder, empty or not, from the refused prepare


def test_a_refused_prepare_into_the_default_cache_leaves_it_unchanged(
    raw, tmp_path, capsys, monkeypatch
):
    cache = tmp_path / "env-cache"
    (cache / "other").mkdir(parents=True)
    (cache / "other/keep.txt").write_text("mine")
    monkeypatch.setenv("PEBENCH_CACHE", str(cache))
    before = _tree(cache)
    assert _prepare(raw, "vtab/kitti,vtab/dtd") == 2
    _one_refusal(capsys)
    assert _tree(cache) == before


def test_a_refused_prepare_keeps_every_existing_cache_as_it_was(raw, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert _prepare(raw, "vtab/kitti", "--cache-dir", str(cache)) == 0
    capsys.readouterr()
    before = _tree(cache)
    assert any(p.endswith("manifest.json") for p in before)
    for extra in ([], ["--force"]):  # --force would replace the kitti cache
        assert _prepare(raw, "vtab/kitti,vtab/dtd", "--cache-dir", str(cache), *extra) == 2
        _one_refusal(capsys)
        assert _tree(cache) == before, extra
    (raw / "kitti/images/test/000001.jpg").write_bytes(b"")  # kitti itself is now refused
    (raw / "dtd/images/test/000003.jpg").unlink()
    Pixels(seed=5).save(raw / "dtd/images/test/000003.jpg")
    assert _prepare(raw, "vtab/dtd,vtab/kitti", "--cache-dir", str(cache), "--force") == 2
    assert "kitti/images/test/000001.jpg" in capsys.readouterr().err
    assert _tree(cache) == before  # the dtd cache decoded before the refusal is not kept
