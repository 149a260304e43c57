"""``pebench prepare``'s dataset checks and cache damage: repeated NOAH lines, a train800val200
that is not train800 + val200, symlinks leaving the task folder, missing task folders, damaged
manifests; each one line, exit 2, nothing written."""

import json
import shutil

import pytest
from noah_data import Pixels, make_noah, prepare_main, small_spec

from pebench.datasets.cache import CacheError, CacheMissingError, load, manifest_hash, prepare
from pebench.datasets.formats import FormatError, ImageError

ALL = ("train800", "val200", "train800val200", "test")


@pytest.fixture
def small(tmp_path):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    make_noah(raw, "kitti", {"train800": 8, "val200": 4, "test": 8}, 4)
    return small_spec(), raw, cache


def _one_line(capsys):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("pebench: error: ")
    return err.strip()


def _cli_small(raw, cache, monkeypatch, spec, tasks="vtab/kitti"):
    """``pebench prepare`` on the small test spec (the registered task needs real sizes)."""
    import pebench.datasets.cache as C

    real = C.resolve_specs
    monkeypatch.setattr(C, "resolve_specs", lambda sel: [spec] if sel == tasks else real(sel))
    argv = [tasks, "--source", "noah", "--data-dir", str(raw), "--cache-dir", str(cache)]
    return prepare_main([*argv, "--image-size", "8", "--quiet"])


# --------------------------------------------------------------------- list content --
def test_noah_list_with_a_repeated_line_is_refused(small, capsys, monkeypatch):
    spec, raw, cache = small
    f = raw / "kitti/test.txt"
    lines = f.read_text().splitlines()
    lines[5] = lines[1]  # the same image twice (same label: nothing else notices)
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        FormatError,
        match=rf"{f} line 6: image 'images/test/000001.jpg' is already listed on line 2; "
        r"a NOAH list names every image once",
    ):
        prepare([spec], "noah", raw, cache, 8)
    assert not cache.exists()
    assert _cli_small(raw, cache, monkeypatch, spec) == 2
    assert "test.txt line 6: image 'images/test/000001.jpg' is already listed" in _one_line(capsys)


def test_trainval_whose_labels_differ_from_train_plus_val_is_refused(small, capsys, monkeypatch):
    spec, raw, cache = small
    f = raw / "kitti/train800val200.txt"
    lines = f.read_text().splitlines()
    rel, label = lines[9].rsplit(" ", 1)  # val200 entry 2
    lines[9] = f"{rel} {(int(label) + 1) % 4}"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        CacheError,
        match=r"vtab/kitti: train800val200 differs from train800 \+ val200: entry 10 \(.*"
        r"train800val200.txt line 10\) has label 2, val200 entry 2 \(.*val200.txt line 2\) has "
        r"label 1; train800val200 must be train800 followed by val200",
    ):
        prepare([spec], "noah", raw, cache, 8)
    assert not cache.exists()  # refused before anything is decoded or written
    assert _cli_small(raw, cache, monkeypatch, spec) == 2
    assert "train800val200 differs from train800 + val200" in _one_line(capsys)


def test_trainval_whose_images_differ_from_train_plus_val_is_refused(small, capsys, monkeypatch):
    spec, raw, cache = small
    Pixels(seed=7).save(raw / "kitti/images/train800val200/000003.jpg")  # not train800[3]
    with pytest.raises(
        CacheError,
        match=r"train800val200 differs from train800 \+ val200: entry 4 \(.*line 4\) has an "
        r"image other than train800 entry 4 \(.*train800.txt line 4\)",
    ):
        prepare([spec], "noah", raw, cache, 8)
    assert not cache.exists()
    assert _cli_small(raw, cache, monkeypatch, spec) == 2
    assert "has an image other than train800 entry 4" in _one_line(capsys)


def test_symlinked_image_outside_the_task_folder_is_refused(small, tmp_path, capsys, monkeypatch):
    spec, raw, cache = small
    outside = tmp_path / "elsewhere" / "secret.jpg"
    Pixels(seed=3).save(outside)
    link = raw / "kitti/images/test/000003.jpg"
    link.unlink()
    link.symlink_to(outside)
    with pytest.raises(
        ImageError,
        match=rf"image {link} is a link to {outside}, outside its folder {raw / 'kitti'}; .*"
        r"listed in .*test.txt line 4\)",
    ):
        prepare([spec], "noah", raw, cache, 8)
    assert not cache.exists()
    assert _cli_small(raw, cache, monkeypatch, spec) == 2
    assert f"is a link to {outside}, outside its folder" in _one_line(capsys)
    # links that stay inside the folder are fine, and so is a task folder that is a link
    inside = raw / "kitti/extra/copy.jpg"
    inside.parent.mkdir()
    shutil.move(outside, inside)
    link.unlink()
    link.symlink_to(inside)
    moved = tmp_path / "disk2" / "kitti"
    moved.parent.mkdir()
    shutil.move(raw / "kitti", moved)
    (raw / "kitti").symlink_to(moved)
    (report,) = prepare([spec], "noah", raw, cache, 8)
    assert report.status == "written"


def test_vpt_and_coop_images_must_stay_in_their_dataset_folder(tmp_path):
    import numpy as np

    from pebench.datasets.cache_decode import _decode_files
    from pebench.datasets.formats import coop_split

    d = tmp_path / "raw" / "oxford-pets"
    (d / "annotations").mkdir(parents=True)
    (d / "annotations/test_meta.list").write_text("a.jpg 0\n")
    Pixels().save(tmp_path / "out.jpg")
    (d / "images").mkdir()
    (d / "images/a.jpg").symlink_to(tmp_path / "out.jpg")
    sl = coop_split(tmp_path / "raw", "oxford_pets", "test_meta.list")
    assert sl.root == d
    images, digests = np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 16), np.uint8)
    with pytest.raises(
        ImageError, match=r"outside its folder .*oxford-pets.*test_meta.list line 1"
    ):
        _decode_files(sl, images, digests, 8, 1, False)


# ------------------------------------------------------------------ missing folders --
def test_prepare_vtab_lists_found_and_missing_task_folders(tmp_path, capsys):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    for folder in ("kitti", "dtd"):
        (raw / folder).mkdir(parents=True)
    with pytest.raises(CacheError) as info:
        prepare("vtab", "noah", raw, cache, 8)
    msg = str(info.value)
    assert msg.startswith(f"--data-dir {raw} holds the folders of 2 of the 19 selected tasks")
    assert "missing: vtab/cifar, vtab/caltech101, vtab/oxford_flowers102" in msg
    missing = msg.split("; found:")[0]
    assert "vtab/dtd" not in missing and "vtab/kitti" not in missing
    assert msg.count("vtab/") == 17 + 2 + 2  # missing, found, and the command for the found ones
    assert (
        f"; found: vtab/dtd, vtab/kitti. To prepare only those: pebench prepare "
        f"vtab/dtd,vtab/kitti --source noah --data-dir {raw} --cache-dir {cache} --image-size 8 "
    ) in msg
    assert not cache.exists()  # nothing prepared unless asked
    argv = ["vtab", "--source", "noah", "--data-dir", str(raw), "--cache-dir", str(cache)]
    assert prepare_main([*argv, "--quiet"]) == 2
    line = _one_line(capsys)
    assert "holds the folders of 2 of the 19 selected tasks" in line and "docs/data.md" in line


def test_prepare_fewshot_summarises_missing_datasets(tmp_path):
    raw = tmp_path / "raw"
    (raw / "oxford-pets").mkdir(parents=True)
    with pytest.raises(CacheError) as info:
        prepare("fewshot", "coop", raw, tmp_path / "cache", 8)
    msg = str(info.value)
    assert "holds the folders of 15 of the 75 selected tasks" in msg
    assert "missing: fewshot/fgvc_aircraft (15 tasks), fewshot/food101 (15 tasks)" in msg
    assert "found: fewshot/oxford_pets (15 tasks). To prepare only those: pebench prepare " in msg
    assert "fewshot/oxford_pets/shot16/seed2 --source coop" in msg
    (raw / "nothing").mkdir()
    with pytest.raises(CacheError, match=r"holds the folders of 0 of the 5 selected tasks .*json"):
        prepare("fgvc", "json", raw, tmp_path / "cache", 8)


def test_prepare_names_a_task_folder_and_a_differently_named_one(tmp_path, capsys):
    """A task folder given as --data-dir, or a task folder in another case: both named."""
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    for folder in ("Caltech101", "CIFAR-100"):
        (raw / folder).mkdir(parents=True)
    layout = "<data-dir>/<task>/{train800,val200,train800val200,test}.txt + images/"
    exact = "folder names must match exactly, case included"

    def line(tasks, data_dir):
        argv = [tasks, "--source", "noah", "--data-dir", str(data_dir), "--cache-dir", str(cache)]
        assert prepare_main([*argv, "--quiet"]) == 2
        return _one_line(capsys).removeprefix("pebench: error: ")

    head = f"--data-dir {raw} holds the folders of 0 of the 2 selected tasks (--source noah: "
    assert line("vtab/cifar,vtab/caltech101", raw) == (
        f"{head}{layout}); missing: vtab/cifar, vtab/caltech101; found 'CIFAR-100' where "
        f"vtab/cifar expects 'cifar', 'Caltech101' where vtab/caltech101 expects 'caltech101' "
        f"({exact}: rename or link them) (the layouts are in docs/data.md)"
    )
    task = raw / "Caltech101"
    assert line("vtab/caltech101", task) == (
        f"--data-dir {task} holds the folders of 0 of the 1 selected tasks (--source noah: "
        f"{layout}); missing: vtab/caltech101; {task} is the folder of vtab/caltech101, not the "
        f"folder holding the task folders: pass its parent {raw} as --data-dir, named "
        f"'caltech101' ({exact}) (the layouts are in docs/data.md)"
    )
    assert not cache.exists()


def test_run_on_a_raw_folder_says_to_prepare_it_into_a_cache(tmp_path, capsys):
    """A raw NOAH folder given to pebench run: prepare it into another folder, pass that."""
    from pebench.cli import main

    raw = tmp_path / "raw"
    (raw / "dtd").mkdir(parents=True)  # raw data of another task of the suite
    argv = ["run", "--method", "lora", "--tasks", "vtab/cifar", "--budget", "vtab1k-smoke"]
    assert main([*argv, "--data-dir", str(raw), "--results", str(tmp_path / "results")]) == 2
    assert _one_line(capsys) == (
        f"pebench: error: task 'vtab/cifar': {raw} holds raw noah data (a folder of vtab/dtd), "
        "not a prepared cache: the --data-dir of pebench run is the cache folder. Prepare it "
        f"with: pebench prepare vtab --source noah --data-dir {raw} --cache-dir <cache folder> "
        "--image-size 32, then pass --data-dir <cache folder>"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # nothing written


# -------------------------------------------------------------------- damaged caches --
def test_corrupt_manifest_is_reported_as_corrupt_not_missing(small, capsys, monkeypatch):
    spec, raw, cache = small
    prepare([spec], "noah", raw, cache, 8)
    path = cache / "vtab/kitti/8px/manifest.json"
    path.write_text(path.read_text()[:200])  # cut short: not JSON
    from pebench.datasets.cache import ManifestError

    with pytest.raises(
        ManifestError,
        match=rf"task 'vtab/kitti': {path} is not valid JSON \(.*\); the cache cannot be "
        r"trusted: prepare it again with --force: pebench prepare vtab/kitti --source noah",
    ):
        load(spec, "test", cache, 8)
    with pytest.raises(ManifestError, match="is not valid JSON"):
        manifest_hash(cache, spec, 8)
    # prepare replaces a damaged cache (nothing in it can be reused)
    (report,) = prepare([spec], "noah", raw, cache, 8)
    assert report.status == "written" and report.decoded == 32
    assert load(spec, "test", cache, 8)[0].shape == (8, 8, 8, 3)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m["splits"]["test"].update(sha256=5), "splits.test.sha256 is 5, expected a"),
        (lambda m: m["splits"]["test"].update(size="8"), "splits.test.size is '8', expected an"),
        (lambda m: m["tasks"]["vtab/kitti"].update(overlap=[]), "overlap is [], expected an obj"),
        (lambda m: m["tasks"]["vtab/kitti"]["overlap"].update(count=None), "overlap.count is Non"),
        (lambda m: m.update(tasks=["vtab/kitti"]), "tasks is ['vtab/kitti'], expected an object"),
        (lambda m: m.update(image_size=True), "image_size is True, expected an integer"),
        (lambda m: m.pop("splits"), "splits is missing"),
    ],
)
def test_wrong_typed_manifest_field_is_one_clear_error(small, edit, field):
    spec, raw, cache = small
    prepare([spec], "noah", raw, cache, 8)
    path = cache / "vtab/kitti/8px/manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))
    for split in ALL:
        with pytest.raises(CacheError) as info:
            load(spec, split, cache, 8)
        assert f"{path} is damaged: " in str(info.value) and field in str(info.value)
        assert "prepare it again with --force" in str(info.value)
        assert not isinstance(info.value, CacheMissingError)


def test_pebench_run_reports_a_corrupt_manifest_in_one_line(tmp_path, capsys):
    from pebench.cli import main

    cache = tmp_path / "cache"
    folder = cache / "vtab/kitti/32px"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text('{"schema": "pebench-cache-1", "splits": ')
    argv = ["run", "--method", "linear", "--tasks", "vtab/kitti", "--budget", "demo-smoke"]
    argv += ["--weights", "random", "--data-dir", str(cache), "--results", str(tmp_path / "r")]
    assert main([*argv, "--quiet"]) == 2
    line = _one_line(capsys)
    assert f"{folder / 'manifest.json'} is not valid JSON" in line
    assert "no prepared cache" not in line and "--force" in line
    assert not (tmp_path / "r" / "runs").exists()
