"""``pebench prepare``: cache writing, manifest, checks on prepare and on load, CLI, runner."""

import dataclasses
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from noah_data import Pixels, make_noah, prepare_main, small_spec
from PIL import Image
from sweeps import run_sweep

from pebench.datasets import cache as C
from pebench.datasets import get_task
from pebench.datasets.cache import CacheError, CacheMissingError, load, manifest_hash, prepare
from pebench.datasets.formats import FormatError, ImageError


@pytest.fixture
def small(tmp_path):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    make_noah(raw, "kitti", {"train800": 8, "val200": 4, "test": 8}, 4)
    return small_spec(), raw, cache


def _sha(images, labels):
    h = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    h.update(np.asarray(labels, np.int64).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------- real sizes (kitti) --
@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
    """vtab/kitti with its real split sizes (800/200/1000/711), prepared at 16 px."""
    tmp = tmp_path_factory.mktemp("kitti")
    make_noah(tmp / "raw", "kitti", {"train800": 800, "val200": 200, "test": 711}, 4)
    reports = prepare("vtab/kitti", "noah", tmp / "raw", tmp / "cache", 16)
    return tmp, reports


def test_prepare_real_sizes_and_manifest(kitti):
    tmp, (report,) = kitti
    spec = get_task("vtab/kitti")
    folder = tmp / "cache" / "vtab" / "kitti" / "16px"
    assert (report.unit, report.path, report.status, report.decoded) == (
        "vtab/kitti",
        folder,
        "written",
        2711,
    )
    assert report.splits == {"train800": 800, "val200": 200, "train800val200": 1000, "test": 711}
    m = json.loads((folder / "manifest.json").read_text())
    assert (m["schema"], m["data_format"], m["image_size"]) == ("pebench-cache-1", "noah-jpeg", 16)
    assert m["pebench_version"] == __import__("pebench").__version__
    assert "source" not in m and C.describe(spec, tmp / "cache", 16)[0] == "noah-jpeg"
    assert "BICUBIC" in m["resize"] and m["source_dir"] == str((tmp / "raw").resolve())
    for split, n in report.splits.items():
        e = m["splits"][split]
        images, labels = load(spec, split, tmp / "cache", 16)
        assert isinstance(images, np.memmap) and images.shape == (n, 16, 16, 3)
        assert (e["size"], e["shape"], e["label_min"], e["label_max"]) == (n, [n, 16, 16, 3], 0, 3)
        assert e["class_counts"] == np.bincount(labels, minlength=4).tolist()
        assert sum(e["class_counts"]) == n and e["classes_present"] == 4
        assert e["sha256"] == _sha(images, labels)  # the core's data_hash formula
        assert e["list_file"] == f"kitti/{split}.txt"
        list_bytes = (tmp / "raw" / e["list_file"]).read_bytes()
        assert e["list_sha256"] == hashlib.sha256(list_bytes).hexdigest()
    assert m["splits"]["train800val200"]["notes"] == [
        "equals train800 + val200 (images and labels)"
    ]
    task = m["tasks"]["vtab/kitti"]
    assert task["version"] == "vtab-noah-1" and task["sizes"]["test"] == 711
    assert task["overlap"] == {"count": 0, "allowed": "", "examples": []}
    # labels follow the list files; images are the decoded, resized JPEGs
    _, y = load(spec, "val200", tmp / "cache", 16)
    assert y[:6].tolist() == [0, 1, 2, 3, 0, 1]
    with Image.open(tmp / "raw/kitti/images/test/000005.jpg") as im:
        want = np.asarray(im.convert("RGB").resize((16, 16), Image.BICUBIC))
    assert np.array_equal(load(spec, "test", tmp / "cache", 16)[0][5], want)


def test_manifest_hash_and_up_to_date(kitti):
    tmp, _ = kitti
    h = manifest_hash(tmp / "cache", "vtab/kitti")
    assert len(h) == 16 and h == manifest_hash(tmp / "cache", get_task("vtab/kitti"), 16)
    (again,) = prepare("vtab/kitti", "noah", tmp / "raw", tmp / "cache", 16)
    assert (again.status, again.decoded) == ("up to date", 0)
    assert manifest_hash(tmp / "cache", "vtab/kitti") == h
    assert C.verify("vtab/kitti", tmp / "cache", 16) == {"vtab/kitti": h}


def test_real_size_check_names_task_split_and_sizes(kitti, tmp_path):
    tmp, _ = kitti
    bad = tmp_path / "kitti"
    bad.mkdir()
    os.symlink(tmp / "raw/kitti/images", bad / "images")
    for f in ("train800", "val200", "train800val200", "test"):
        lines = (tmp / "raw/kitti" / f"{f}.txt").read_text().splitlines()
        (bad / f"{f}.txt").write_text("\n".join(lines[:-1] if f == "test" else lines) + "\n")
    with pytest.raises(CacheError, match=r"task 'vtab/kitti', split 'test': 710 examples .*711"):
        prepare("vtab/kitti", "noah", tmp_path, tmp_path / "cache", 16)
    assert not (tmp_path / "cache" / "vtab" / "kitti" / "16px").exists()


# ------------------------------------------------------------------------- load checks --
def test_load_checks_hash_size_version_and_missing_cache(small, monkeypatch):
    spec, raw, cache = small
    prepare([spec], "noah", raw, cache, 8)
    x, y = load(spec, "test", cache, 8)
    assert x.shape == (8, 8, 8, 3)

    with pytest.raises(
        CacheMissingError,
        match=r"no prepared cache at .*8px\). Run: pebench prepare vtab/kitti --source noah "
        r"--data-dir <raw data folder> --cache-dir .* --image-size 16",
    ):
        load(spec, "test", cache, 16)
    prepare([spec], "noah", raw, cache, 4)
    with pytest.raises(CacheMissingError, match=r"2 prepared image sizes .*\(4px, 8px\)"):
        manifest_hash(cache, spec)
    assert manifest_hash(cache, spec, 4) != manifest_hash(cache, spec, 8)
    monkeypatch.setenv("PEBENCH_CACHE", str(cache))
    assert np.array_equal(load(spec, "test", None, 8)[1], y)  # data_dir None: default cache
    monkeypatch.setenv("PEBENCH_CACHE", str(cache.parent / "elsewhere"))
    with pytest.raises(CacheMissingError, match=r"no prepared cache at .*elsewhere/vtab/kitti"):
        load(spec, "test", None, 8)

    newer = dataclasses.replace(spec, version="test-2")
    with pytest.raises(CacheError, match=r"has version 'test-1', the task spec says 'test-2'"):
        load(newer, "test", cache, 8)

    folder = cache / "vtab/kitti/8px"
    images = np.load(folder / "test.images.npy")
    images[3, 2, 1, 0] ^= 1
    np.save(folder / "test.images.npy", images)
    with pytest.raises(CacheError, match=r"task 'vtab/kitti', split 'test': arrays hash .*"):
        load(spec, "test", cache, 8)
    assert load(spec, "val200", cache, 8)[0].shape[0] == 4  # other splits still load

    labels = np.load(folder / "val200.labels.npy")
    np.save(folder / "val200.labels.npy", labels[:-1])
    with pytest.raises(CacheError, match=r"split 'val200': labels are int64 \(3,\), want 4"):
        load(spec, "val200", cache, 8)


def test_prepare_is_atomic_and_keeps_the_old_cache(small):
    spec, raw, cache = small
    (raw / "kitti/images/test/000003.jpg").write_bytes(b"garbage")
    with pytest.raises(
        ImageError, match=r"cannot decode image .*test/000003.jpg: .*listed in .*test.txt line 4\)"
    ):
        prepare([spec], "noah", raw, cache, 8)
    assert not cache.exists()  # no temp folder left, nor the folders made for it

    Pixels(seed=1).save(raw / "kitti/images/test/000003.jpg")
    prepare([spec], "noah", raw, cache, 8)
    before = load(spec, "test", cache, 8)[0].copy()
    (raw / "kitti/images/test/000004.jpg").unlink()
    with pytest.raises(ImageError, match=r"missing image .*test/000004.jpg .*test.txt line 5"):
        prepare([spec], "noah", raw, cache, 8, force=True)
    assert np.array_equal(load(spec, "test", cache, 8)[0], before)  # old cache intact
    assert sorted(p.name for p in (cache / "vtab/kitti").iterdir()) == ["8px"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_listed_as_an_image_is_refused_not_waited_on(small):
    """Reading a FIFO blocks until a writer comes: prepare refused it by type, in one line."""
    import threading

    spec, raw, cache = small
    fifo = raw / "kitti/images/test/000003.jpg"
    fifo.unlink()
    os.mkfifo(fifo)
    errors: list[str] = []

    def run() -> None:
        try:
            prepare([spec], "noah", raw, cache, 8)
        except ImageError as err:
            errors.append(str(err))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():  # the old code blocks in open(): a writer lets it go on
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(30)
    assert errors == [
        f"image {fifo} is not a regular file (a FIFO, device or folder); list image files only "
        f"(listed in {raw / 'kitti/test.txt'} line 4)"
    ]
    assert not cache.exists()


def test_label_class_and_source_errors(small):
    spec, raw, cache = small
    with pytest.raises(
        CacheError,
        match=r"task 'vtab/kitti' is read from data format 'noah-jpeg' or 'tfds' \(--source noah "
        r"or tfds\), not --source json \(vpt-json\)",
    ):
        prepare([spec], "json", raw, cache, 8)
    with pytest.raises(CacheError, match=r"--manual-dir and --download only apply to --source"):
        prepare([spec], "noah", raw, cache, 8, manual_dir=raw)
    with pytest.raises(CacheError, match=r"unknown --source 'tfrecord'"):
        prepare([spec], "tfrecord", raw, cache, 8)
    with pytest.raises(CacheError, match=r"task 'vtab/kitti': 4 of 5 classes occur .*\[4\]"):
        prepare([small_spec(num_classes=5)], "noah", raw, cache, 8)
    lines = (raw / "kitti/val200.txt").read_text().splitlines()
    lines[2] = lines[2].rsplit(" ", 1)[0] + " 4"
    (raw / "kitti/val200.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        CacheError,
        match=r"task 'vtab/kitti', split 'val200': label 4 out of range 0..3 \(.*val200.txt line 3",
    ):
        prepare([spec], "noah", raw, cache, 8)
    lines[2] = "images/val200/000002.jpg"
    (raw / "kitti/val200.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError, match=r"kitti/val200.txt line 3: expected"):
        prepare([spec], "noah", raw, cache, 8)


def test_train_test_overlap_is_an_error_unless_allowed(small):
    spec, raw, cache = small
    shutil.copyfile(raw / "kitti/images/val200/000001.jpg", raw / "kitti/images/test/000006.jpg")
    with pytest.raises(
        CacheError,
        match=r"task 'vtab/kitti': 1 test images also occur in train800/val200/train800val200 "
        r".*test\[6\] == val200\[1\]; .*--allow-overlap",
    ):
        prepare([spec], "noah", raw, cache, 8)
    prepare([spec], "noah", raw, cache, 8, allow_overlap=True)
    m = json.loads((cache / "vtab/kitti/8px/manifest.json").read_text())
    assert m["tasks"]["vtab/kitti"]["overlap"] == {
        "count": 1,
        "allowed": "allow_overlap=True",
        "examples": ["test[6] == val200[1]"],
    }
    assert load(spec, "test", cache, 8)[0].shape == (8, 8, 8, 3)  # recorded, so it loads
    with pytest.raises(CacheError, match=r"1 test images also occur"):
        prepare([spec], "noah", raw, cache, 8)  # without the flag the cache is not accepted
    assert get_task("vtab/dsprites_ori").known_overlap and not get_task("vtab/cifar").known_overlap


def test_dsprites_duplicates_are_recorded_not_refused(tmp_path):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    d = make_noah(raw, "dsprites_ori", {"train800": 8, "val200": 4, "test": 8}, 4)
    shutil.copyfile(d / "images/train800/000002.jpg", d / "images/test/000002.jpg")
    spec = small_spec("vtab/dsprites_ori")
    prepare([spec], "noah", raw, cache, 8)
    m = json.loads((cache / "vtab/dsprites_ori/8px/manifest.json").read_text())
    overlap = m["tasks"]["vtab/dsprites_ori"]["overlap"]
    assert overlap["count"] == 1 and overlap["allowed"].startswith("dSprites: symmetric shapes")
    assert overlap["examples"] == ["test[2] == train800[2]"]


def test_overlap_is_rechecked_on_load(small):
    spec, raw, cache = small
    prepare([spec], "noah", raw, cache, 8)
    folder = cache / "vtab/kitti/8px"
    m = json.loads((folder / "manifest.json").read_text())
    dig = np.load(folder / "test.digests.npy")
    dig[0] = np.load(folder / "train800.digests.npy")[2]
    np.save(folder / "test.digests.npy", dig)
    m["splits"]["test"]["digests_sha256"] = hashlib.sha256(dig.tobytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CacheError, match=r"1 test images occur in training splits, manifest"):
        load(spec, "train800", cache, 8)


# --------------------------------------------------------------------------------- FGVC --
def test_fgvc_json_prepare_remaps_and_concatenates(tmp_path):
    px, d = Pixels(), tmp_path / "raw" / "StanfordDogs"
    ids = [3, 10, 7]  # original ids; contiguous labels follow the sorted order 3, 7, 10
    files = {}
    for split, n in (("train", 6), ("val", 3), ("test", 3)):
        files[split] = {f"n{i % 3}-breed/{split}_{i}.jpg": ids[i % 3] for i in range(n)}
        for rel in files[split]:
            px.save(d / "Images" / rel)
        (d / f"{split}.json").write_text(json.dumps(files[split]))
    spec = small_spec(
        "fgvc/stanford_dogs",
        3,
        {"train": 6, "val": 3, "train+val": 9, "test": 3},
        fmt="vpt-json",
        splits={"train": "train", "val": "val", "trainval": "train+val", "test": "test"},
    )
    (report,) = prepare([spec], "json", tmp_path / "raw", tmp_path / "cache", 8)
    assert report.splits == {"train": 6, "val": 3, "test": 3}  # train+val is not stored twice
    tr, ytr = load(spec, "train", tmp_path / "cache", 8)
    va, yva = load(spec, "val", tmp_path / "cache", 8)
    tv, ytv = load(spec, "train+val", tmp_path / "cache", 8)
    assert ytr.tolist() == [0, 2, 1, 0, 2, 1]
    assert np.array_equal(tv, np.concatenate([tr, va])) and ytv.tolist() == ytr.tolist() + [0, 2, 1]
    m = json.loads((tmp_path / "cache/fgvc/stanford_dogs/8px/manifest.json").read_text())
    assert m["data_format"] == "vpt-json"
    assert f"image root {d / 'Images'}" in m["splits"]["train"]["notes"]
    assert "class ids 3..10 -> 0..2" in m["splits"]["train"]["notes"]


# ----------------------------------------------------------------------------- few-shot --
def _coop(root, px):
    d = root / "oxford-pets"
    names = {c: f"Breed {c}" for c in range(3)}
    ann = d / "annotations"
    ann.mkdir(parents=True)

    def write(fname, per_class, twice=False):
        lines = []
        for c in range(3):
            for i in range(per_class):
                rel = f"{names[c]}_{fname[:5]}_{i}.jpg"
                px.save(d / "images" / rel)
                lines.append(f"{rel} {c}")
        (ann / fname).write_text("\n".join(lines * (2 if twice else 1)) + "\n")

    write("train_meta.list.num_shot_1.seed_0", 1, twice=True)  # the oxford-pets quirk
    write("train_meta.list.num_shot_2.seed_0", 2)
    write("val_meta.list", 2)
    write("test_meta.list", 3)
    return d


def _fs_spec(shot):
    train = f"train_meta.list.num_shot_{shot}.seed_0"
    return small_spec(
        f"fewshot/oxford_pets/shot{shot}/seed0",
        3,
        {train: 3 * shot, "val_meta.list": 6, "test_meta.list": 9},
        fmt="coop-list",
        splits={
            "train": train,
            "val": "val_meta.list",
            "trainval": train,
            "test": "test_meta.list",
        },
    )


def test_fewshot_dedup_shared_splits_and_incremental_prepare(tmp_path):
    _coop(tmp_path / "raw", Pixels())
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    (r1,) = prepare([_fs_spec(1)], "coop", raw, cache, 8)
    assert r1.splits == {"train_meta.list.num_shot_1.seed_0": 3, "val_meta.list": 6,
                         "test_meta.list": 9}  # fmt: skip
    assert r1.decoded == 3 + 6 + 9
    folder = cache / "fewshot/oxford_pets/8px"
    m = json.loads((folder / "manifest.json").read_text())
    assert m["splits"]["train_meta.list.num_shot_1.seed_0"]["notes"] == ["removed 3 repeated lines"]
    x, y = load(_fs_spec(1), "train_meta.list.num_shot_1.seed_0", cache, 8)
    assert y.tolist() == [0, 1, 2] and len({img.tobytes() for img in x}) == 3
    test_inode = (folder / "test_meta.list.images.npy").stat().st_ino
    h1 = manifest_hash(cache, _fs_spec(1), 8)

    (r2,) = prepare([_fs_spec(2)], "coop", raw, cache, 8)  # adds one list, reuses the rest
    assert r2.decoded == 6 and set(r2.splits) == set(r1.splits) | {
        "train_meta.list.num_shot_2.seed_0"
    }
    assert (folder / "test_meta.list.images.npy").stat().st_ino == test_inode  # linked
    assert manifest_hash(cache, _fs_spec(1), 8) == h1  # the earlier task is still there
    assert load(_fs_spec(2), "test_meta.list", cache, 8)[0].shape == (9, 8, 8, 3)


def test_fewshot_k_per_class_is_checked(tmp_path):
    d = _coop(tmp_path / "raw", Pixels())
    f = d / "annotations/train_meta.list.num_shot_2.seed_0"
    lines = f.read_text().splitlines()
    lines[2] = lines[2].rsplit(" ", 1)[0] + " 0"  # class 1's first image relabelled as 0
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(CacheError, match=r"class 0 has 3 images, a 2-shot list needs 2 per class"):
        prepare([_fs_spec(2)], "coop", tmp_path / "raw", tmp_path / "cache", 8)


# ---------------------------------------------------------------------------------- CLI --
def test_cli_prepare_and_errors(small, capsys):
    _, raw, cache = small
    argv = ["vtab/kitti", "--source", "noah", "--data-dir", str(raw), "--cache-dir", str(cache)]
    argv += ["--image-size", "8", "--quiet"]
    # the registered vtab/kitti needs 800/200/1000/711 examples: the small folder is refused
    assert prepare_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pebench: error: task 'vtab/kitti', split 'train800': 8 examples")
    assert prepare_main([*argv[:2], "json", *argv[3:]]) == 2
    assert "--source noah" in capsys.readouterr().err
    assert prepare_main(["vtab/kitt", *argv[1:]]) == 2
    assert "Did you mean 'vtab/kitti'" in capsys.readouterr().err


def test_cli_prepare_json_report(kitti, capsys):
    tmp, _ = kitti
    argv = ["vtab/kitti", "--source", "noah", "--data-dir", str(tmp / "raw")]
    argv += ["--cache-dir", str(tmp / "cache"), "--image-size", "16"]
    assert prepare_main([*argv, "--json", "--verify", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["units"][0]["status"] == "up to date"
    assert out["manifest_hashes"] == {"vtab/kitti": manifest_hash(tmp / "cache", "vtab/kitti")}


# ------------------------------------------------------------------------ runner, e2e --
@pytest.mark.slow
def test_vtab_cifar_runs_end_to_end_from_a_prepared_cache(tmp_path):
    from pebench.run import RunOptions
    from pebench.sweep.plan import plan_sweep

    raw, cache = tmp_path / "raw", tmp_path / "cache"
    # real sizes (800/200/1000/10,000); the test images are links to 500 files (faster to make)
    make_noah(raw, "cifar", {"train800": 800, "val200": 200, "test": 10_000}, 100, 500)
    (report,) = prepare("vtab/cifar", "noah", raw, cache, 32)
    assert report.decoded == 800 + 200 + 1000 + 10_000
    rows = run_sweep(
        plan_sweep(
            "linear",
            tasks="vtab/cifar",
            budget="demo-smoke",
            weights="random",
            seeds=[0],
            results_dir=tmp_path / "results",
            options=RunOptions(data_dir=str(cache), progress=False),
        )
    )
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"], [r["error"] for r in rows]
    m = json.loads((cache / "vtab/cifar/32px/manifest.json").read_text())
    sha = {s: e["sha256"][:16] for s, e in m["splits"].items()}
    final = rows[-1]
    assert final["data_format"] == "noah-jpeg" and final["task_version"] == "vtab-noah-1"
    assert final["data_hash"] == f"{sha['train800val200']}+{sha['test']}"
    assert rows[0]["data_hash"] == f"{sha['train800']}+{sha['val200']}"
    assert 0.0 <= final["test_top1"] <= 1.0
