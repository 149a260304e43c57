import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
import videogen as vg

from pebench.datasets import get_suite, get_task, tasks
from pebench.datasets import video as V
from pebench.datasets.cache import CacheMissingError
from pebench.datasets.formats import DatasetError, FormatError

FRAMES, W, H = 20, 64, 48  # decord 0.6.0 mis-sizes 48x32 frames; 64x48 decodes correctly
P = V.VideoProtocol(
    num_frames=4, sampling_rate=2, short_side=32, crop_size=32, test_segments=2, test_crops=3
)
ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def hmdb(tmp_path_factory):
    return vg.make_hmdb(
        tmp_path_factory.mktemp("hmdb") / "hmdb51", frames=FRAMES, width=W, height=H
    )


@pytest.fixture(scope="module")
def ssv2(tmp_path_factory):
    return vg.make_ssv2(tmp_path_factory.mktemp("ssv2") / "ssv2", frames=FRAMES, width=W, height=H)


def small(name, classes=3):
    return dataclasses.replace(get_task(name), num_classes=classes)


@pytest.fixture(scope="module")
def hmdb_cache(hmdb, tmp_path_factory):
    """The cache folder holding the prepared manifest of the small HMDB51 (what runs read)."""
    cache = tmp_path_factory.mktemp("hmdb_cache")
    V.prepare_video(small("video/hmdb51"), hmdb, cache)
    return cache


@pytest.fixture(scope="module")
def ssv2_cache(ssv2, tmp_path_factory):
    cache = tmp_path_factory.mktemp("ssv2_cache")
    V.prepare_video(small("video/ssv2"), ssv2, cache)
    return cache


def red(x):  # (C, T, H, W) normalised with ZERO/ONE -> decoded frame index per t
    return vg.decode_frame_index(x[0].mean((-1, -2)).numpy() * 255)


# ----------------------------------------------------------------------------- registry --
def test_registry():
    ssv2, hmdb = get_task("video/ssv2"), get_task("video/hmdb51")
    assert (ssv2.num_classes, hmdb.num_classes) == (174, 51)
    assert ssv2.modality == hmdb.modality == "video"
    assert get_task("vtab/cifar").modality == "image"
    assert get_task("hmdb51") is hmdb and get_task("ssv2") is ssv2
    assert get_task("video/hmdb51_split1") is hmdb
    assert get_task("video/hmdb51_split3").group == "hmdb51"
    assert get_suite("video").tasks == ("video/ssv2", "video/hmdb51")
    assert hmdb.splits == {"train": "train90", "val": "val10", "trainval": "train", "test": "test"}
    assert ssv2.splits["test"] == "val" and ssv2.loader == "pebench.datasets.video:LOADER"
    aliases = [a for s in tasks().values() for a in s.aliases]
    assert len(set(aliases)) == len(aliases) and not set(aliases) & set(tasks())


# -------------------------------------------------------------------------------- lists --
def test_parse_video_list(tmp_path):
    f = tmp_path / "train.csv"
    f.write_text(f"a.mp4 0\n\n{tmp_path}/b.mp4 2\r\n")
    assert V.parse_video_list(f, 3) == [
        ("a.mp4", 0, f"{f} line 1"),
        (f"{tmp_path}/b.mp4", 2, f"{f} line 3"),
    ]
    for body, bad in (("a.mp4 0\nb.mp4 40 3\n", 2), ("a.mp4 0\nc.mp4 x\n", 2), ("a.mp4 3\n", 1)):
        f.write_text(body)
        with pytest.raises(FormatError, match=rf"{f} line {bad}\b"):
            V.parse_video_list(f, 3)
    with pytest.raises(FormatError, match="missing list file"):
        V.parse_video_list(tmp_path / "nope.csv", 3)


def test_ssv2_lists_and_absolute_paths(ssv2, tmp_path):
    lists = V.ssv2_lists(ssv2, 3)
    assert len(lists["train"].rels) == 30 and len(lists["val"].rels) == 6
    assert lists["train"].rels[0] == "videos/0.mp4" and lists["train"].paths[0].is_file()
    # an absolute path inside the folder gets the same identity as the relative one
    assert V._entry(ssv2, str(ssv2 / "videos/0.mp4")) == ("videos/0.mp4", ssv2 / "videos/0.mp4")
    # every class must have videos; a repeated path is named with both lines
    root = shutil.copytree(ssv2, tmp_path / "s", ignore=shutil.ignore_patterns("*.mp4"))
    (root / "val.csv").write_text("videos/30.mp4 0\nvideos/31.mp4 1\n")
    with pytest.raises(DatasetError, match=r"val.csv: 1 of 3 classes have no videos \(ids \[2\]"):
        V.ssv2_lists(root, 3)
    (root / "val.csv").write_text("videos/30.mp4 0\nvideos/31.mp4 1\nvideos/30.mp4 2\n")
    with pytest.raises(FormatError, match=r"val.csv line 3: .*already listed at .*line 1"):
        V.ssv2_lists(root, 3)


def test_hmdb_lists(hmdb, tmp_path):
    s1 = V.hmdb_lists(hmdb, 1, 3)
    assert (len(s1["train"].rels), len(s1["test"].rels)) == (21, 9)
    assert s1["train"].rels[0] == "action_00/action_00_clip_0.avi"
    assert np.bincount(s1["test"].labels).tolist() == [3, 3, 3]
    test = s1["test"]
    assert all(r.startswith(vg.hmdb_class(c)) for r, c in zip(test.rels, test.labels, strict=True))
    assert not any(r.endswith("clip_10.avi") for r in s1["train"].rels + s1["test"].rels)  # id 0
    s2 = V.hmdb_lists(hmdb, 2, 3)
    assert set(s2["test"].rels) != set(s1["test"].rels)
    assert set(s2["test"].rels) | set(s2["train"].rels) == set(s1["test"].rels) | set(
        s1["train"].rels
    )
    with pytest.raises(DatasetError, match=r"3 classes .* expected 51"):
        V.hmdb_lists(hmdb, 1, 51)
    root = shutil.copytree(hmdb, tmp_path / "h", ignore=shutil.ignore_patterns("*.avi"))
    f = root / V.HMDB_SPLIT_DIR / "action_01_test_split1.txt"
    lines = f.read_text().splitlines()
    f.write_text("\n".join([*lines[:3], "action_01_clip_3.avi 3", *lines[4:]]))
    with pytest.raises(FormatError, match=rf"{f} line 4: .*id 0, 1 or 2"):
        V.hmdb_lists(root, 1, 3)
    f.write_text("\n".join(ln.replace(" 2", " 0") for ln in lines))
    with pytest.raises(DatasetError, match=rf"{f}: class 'action_01' has no test \(id 2\)"):
        V.hmdb_lists(root, 1, 3)
    with pytest.raises(FormatError, match="no HMDB51 split files"):
        V.hmdb_lists(root, 4, 3)


def test_dataset_dir(hmdb, ssv2):
    assert V.dataset_dir(small("video/hmdb51"), hmdb.parent) == hmdb  # root holding "hmdb51"
    assert V.dataset_dir(small("video/ssv2"), ssv2) == ssv2
    with pytest.raises(DatasetError, match=r"no train.csv in .* ssv2, SSv2"):
        V.dataset_dir(small("video/ssv2"), hmdb)


def test_carve_out_is_deterministic_and_stratified():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), [70, 20, 3, 2, 1])
    rels = [f"v{i:03d}.mp4" for i in range(len(labels))]
    mask = V.carve_val(rels, labels)
    assert [int(mask[labels == c].sum()) for c in range(5)] == [7, 2, 1, 1, 0]
    assert np.array_equal(mask, V.carve_val(rels, labels))
    perm = rng.permutation(len(labels))
    shuffled = V.carve_val([rels[i] for i in perm], labels[perm])
    assert {rels[i] for i in perm[shuffled]} == {rels[i] for i in np.flatnonzero(mask)}
    assert not np.array_equal(mask, V.carve_val(rels, labels, seed=V.CARVE_SEED + 1))


def test_split_roles(hmdb):
    lists = V.split_lists(small("video/hmdb51"), hmdb)
    tr, va, full = lists["train90"], lists["val10"], lists["train"]
    assert np.bincount(va.labels).tolist() == [1, 1, 1]  # round(0.7) of 7 per class
    assert not set(tr.rels) & set(va.rels) and set(tr.rels) | set(va.rels) == set(full.rels)
    assert not set(full.rels) & set(lists["test"].rels)


# ------------------------------------------------------------------------------ sampling --
def test_indices():
    rng = np.random.default_rng(0)
    starts = {int(V.train_indices(20, P, rng)[0]) for _ in range(200)}
    assert starts == set(range(20 - P.span + 1))  # span 7 -> starts 0..13
    assert np.diff(V.train_indices(20, P, rng)).tolist() == [2, 2, 2]
    assert V.train_indices(5, P, rng).tolist() == [0, 2, 4, 4]  # short: pad with the last
    assert V.test_indices(20, P).tolist() == [[0, 2, 4, 6], [13, 15, 17, 19]]
    one = dataclasses.replace(P, test_segments=1)
    assert V.test_indices(20, one).tolist() == [[6, 8, 10, 12]]
    assert V.crop_offsets(43, 32, 3) == [0, 6, 11] and V.crop_offsets(43, 32, 1) == [5]
    with pytest.raises(ValueError, match="crop_size 40 exceeds short_side 32"):
        V.VideoProtocol(short_side=32, crop_size=40)


def test_train_clips(hmdb_cache):
    spec = small("video/hmdb51")
    ds = V.video_split(spec, "train", hmdb_cache, P, ZERO, ONE, seed=3, train=True)
    assert len(ds) == 18 and ds.views == 1 and ds.skipped == 0 and ds.labels.dtype == np.int64
    assert ds.flip
    firsts = set()
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 4, 32, 32) and x.dtype == torch.float32 and y == ds.labels[i]
        idx = red(x)
        assert np.abs(np.diff(idx) - 2).max() < 0.5  # stride 2
        firsts.add(round(idx[0]))
        assert abs(vg.decode_class(x[1].mean().item() * 255) - y) < 0.1  # label <-> content
    assert len(firsts) > 3
    again = V.video_split(spec, "train", hmdb_cache, P, ZERO, ONE, seed=3, train=True)
    assert all(torch.equal(again[i][0], ds[i][0]) for i in (5, 2))  # order-independent
    ds.set_epoch(1)
    assert any(not torch.equal(ds[i][0], again[i][0]) for i in range(4))
    other = V.video_split(spec, "train", hmdb_cache, P, ZERO, ONE, seed=4, train=True)
    assert any(not torch.equal(other[i][0], again[i][0]) for i in range(4))
    # flips happen (blue ramp reversed) for HMDB, never for SSv2
    ramps = [ds[i][0][2, 0, 0] for i in range(len(ds))]
    assert {bool(r[0] > r[-1]) for r in ramps} == {True, False}
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch[0].shape == (4, 3, 4, 32, 32) and batch[1].dtype == torch.int64


def test_ssv2_never_flips(ssv2_cache):
    spec = small("video/ssv2")
    ds = V.video_split(spec, "trainval", ssv2_cache, P, ZERO, ONE, seed=0, train=True)
    assert len(ds) == 30 and not ds.flip
    assert all(ds[i][0][2, 0, 0, 0] < ds[i][0][2, 0, 0, -1] for i in range(len(ds)))


def test_short_video_pads_last_frame(tmp_path):
    vg.write_video(tmp_path / "short.mp4", 1, frames=5, width=W, height=H)
    ds = V.VideoClips([tmp_path / "short.mp4"], np.array([1]), P, ZERO, ONE, 0, True)
    assert np.round(red(ds[0][0])).tolist() == [0, 2, 4, 4]


def test_multiview_test(hmdb_cache):
    spec = small("video/hmdb51")
    ds = V.video_split(spec, "test", hmdb_cache, P, ZERO, ONE, seed=0, train=False)
    assert ds.views == 6 and len(ds) == 9
    x, y = ds[4]
    assert x.shape == (6, 3, 4, 32, 32) and y == 1
    starts = [round(red(v)[0]) for v in x]
    assert starts == [0, 0, 0, 13, 13, 13]  # segment-major: 2 segments x 3 crops
    assert all(np.abs(np.diff(red(v)) - 2).max() < 0.5 for v in x)
    blue = x[:, 2].mean((1, 2, 3)).numpy() * 255  # frames 43x32 after resize: crops 0, 6, 11
    for k, off in enumerate((0, 6, 11)):  # crop covers source columns lo..hi of the ramp
        lo, hi = off * (W / 43), (off + 32) * (W / 43)
        assert abs(blue[k] - 255 * (lo + hi) / 2 / W) < 4
    assert blue[0] < blue[1] < blue[2] and np.allclose(blue[:3], blue[3:], atol=1)
    single = dataclasses.replace(P, test_segments=1, test_crops=1)
    one = V.video_split(spec, "val", hmdb_cache, single, ZERO, ONE, 0, False)
    assert one.views == 1 and one[0][0].shape == (3, 4, 32, 32)
    assert round(red(one[0][0])[0]) == 6  # centred window


def test_normalisation(hmdb_cache):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    spec = small("video/hmdb51")
    raw = V.video_split(spec, "test", hmdb_cache, P, ZERO, ONE, seed=0, train=False)[0][0]
    norm = V.video_split(spec, "test", hmdb_cache, P, mean, std, seed=0, train=False)[0][0]
    m, s = torch.tensor(mean).view(1, 3, 1, 1, 1), torch.tensor(std).view(1, 3, 1, 1, 1)
    assert torch.allclose(norm, (raw - m) / s, atol=1e-5)
    assert abs(raw[0, 0, 0].mean().item() * 255 - vg.frame_value(0)) < vg.TOL
    assert abs(raw[0, 1].mean().item() * 255 - vg.class_value(0)) < vg.TOL


# ------------------------------------------------------------------- bad videos, prepare --
@pytest.fixture
def broken(hmdb, tmp_path):
    root = shutil.copytree(hmdb, tmp_path / "hmdb51")
    bad = root / "action_02" / "action_02_clip_2.avi"  # a training video in split 1
    bad.write_bytes(b"not a video" * 50)
    return root, bad


def _snapshot(folder):
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def test_corrupt_video_errors_and_skip(broken, tmp_path):
    root, bad = broken
    spec, cache = small("video/hmdb51"), tmp_path / "cache"
    with pytest.raises(V.VideoError, match=rf"{bad}.*listed in .*action_02_test_split1.txt line 3"):
        V.prepare_video(spec, root, cache)
    V.prepare_video(spec, root, cache, skip_bad=True)
    skip = V.video_split(spec, "trainval", cache, P, ZERO, ONE, 0, True, skip_bad=True)
    assert (len(skip), skip.skipped) == (20, 1) and bad not in skip.paths
    assert V.video_split(spec, "test", cache, P, ZERO, ONE, 0, False, skip_bad=True).skipped == 0
    # a video damaged or removed after prepare is named when a run decodes it
    good = skip.paths[0]
    good.write_bytes(b"not a video either" * 20)
    with pytest.raises(V.VideoError, match=rf"cannot open video {good}"):
        skip[0]
    good.unlink()
    with pytest.raises(V.VideoError, match=rf"missing video {good}"):
        skip[0]
    with pytest.raises(V.VideoError, match=rf"missing video {good} \(listed in .*line 1\)"):
        V.prepare_video(spec, root, cache, skip_bad=False)


def test_prepare_manifest(broken, tmp_path):
    root, bad = broken
    spec, cache = small("video/hmdb51"), tmp_path / "cache"
    before = _snapshot(root)
    (report,) = V.prepare_video(spec, root, cache, skip_bad=True)
    assert _snapshot(root) == before  # nothing written into the raw folder
    assert report.manifest == cache / "video" / "hmdb51" / "manifest.json"
    assert report.splits == {"test": 9, "train": 20, "train90": 17, "val10": 3}
    assert report.checked == 30 and [s["path"] for s in report.skipped] == [
        "action_02/action_02_clip_2.avi"
    ]
    assert [p.name for p in report.manifest.parent.iterdir()] == ["manifest.json"]  # no temp
    m = json.loads(report.manifest.read_text())
    assert m["schema"] == V.SCHEMA and m["task"] == "video/hmdb51" and m["num_classes"] == 3
    assert m["source_dir"] == str(root.resolve())  # runs find the videos through it
    assert m["index"]["train"]["class_counts"] == [7, 7, 6]
    assert m["index"]["train"]["skipped"] == 1
    assert m["index"]["test"]["frames"] == {"min": FRAMES, "max": FRAMES, "mean": FRAMES}
    assert len(m["frames"]) == 29 and "cannot open video" in m["skipped"][0]["reason"]
    assert V.describe(spec, cache, 224) == ("hmdb51-splits", report.data_hash)
    # the bad video is dropped without decoding, only if skipping is allowed
    in_train = "action_02/action_02_clip_2.avi" in V.split_lists(spec, root)["train90"].rels
    ds = V.video_split(spec, "train", cache, P, ZERO, ONE, 0, True, skip_bad=True)
    assert ds.skipped == int(in_train) and ds.sha256 == m["index"]["train90"]["sha256"]
    full = V.video_split(spec, "trainval", cache, P, ZERO, ONE, 0, True, skip_bad=True)
    assert (len(full), full.skipped) == (20, 1)
    with pytest.raises(V.VideoError, match="1 bad videos recorded by prepare.*does not allow"):
        V.video_split(spec, "trainval", cache, P, ZERO, ONE, 0, True)
    # the same data prepared into another cache give the same hashes
    (other,) = V.prepare_video(spec, root, tmp_path / "other", skip_bad=True)
    assert other.manifest.parent.parent.parent == tmp_path / "other"
    assert other.data_hash == report.data_hash
    # one meaning of data_dir: the cache; the raw folder or an empty cache are refused
    with pytest.raises(CacheMissingError, match=r"holds the raw videos, but --data-dir of pebench"):
        V.video_split(spec, "test", root, P, ZERO, ONE, 0, False)
    report.manifest.unlink()
    with pytest.raises(
        CacheMissingError,
        match=r"no prepared video manifest at .*hmdb51/manifest.json. Run: pebench prepare "
        r"video/hmdb51 --data-dir <raw video folder> --cache-dir",
    ):
        V.describe(spec, cache, 224)
    # changed lists or task definition -> clear error
    V.prepare_video(spec, root, cache, skip_bad=True)
    f = root / V.HMDB_SPLIT_DIR / "action_00_test_split1.txt"
    f.write_text(f.read_text() + "\n")
    with pytest.raises(V.VideoManifestError, match="list files changed.*run prepare again"):
        V.video_split(spec, "test", cache, P, ZERO, ONE, 0, False)
    V.prepare_video(spec, root, cache, skip_bad=True)
    old = dataclasses.replace(spec, version="video-0")
    with pytest.raises(V.VideoManifestError, match=r"version is 'video-1', task .* has 'video-0'"):
        V.video_split(old, "test", cache, P, ZERO, ONE, 0, False)
    # the raw videos moved away: named, with what to do
    root.rename(tmp_path / "moved")
    with pytest.raises(V.VideoManifestError, match=r"raw videos it records are not found"):
        V.describe(spec, cache, 224)


def test_cli_prepare_video_prints_a_summary(hmdb, tmp_path, capsys, monkeypatch):
    import argparse

    import pebench.datasets as D
    from pebench.commands.prepare import add_parser
    from pebench.commands.prepare import main as cmd_prepare

    monkeypatch.setattr(D, "resolve_tasks", lambda sel: [small("video/hmdb51")])
    parser = argparse.ArgumentParser(prog="pebench")
    add_parser(parser.add_subparsers(dest="command"))
    before = _snapshot(hmdb)
    argv = ["prepare", "video/hmdb51", "--data-dir", str(hmdb), "--cache-dir", str(tmp_path)]
    assert cmd_prepare(parser.parse_args([*argv, "--quiet"])) == 0
    out, err = capsys.readouterr()
    assert _snapshot(hmdb) == before
    (line,) = out.splitlines()
    assert line.startswith("video/hmdb51") and "{" not in line  # words, not a Python dict
    assert "30 videos checked, all decode; splits: test 9, train 21, train90 18, val10 3" in line
    assert line.endswith(f"-> {tmp_path / 'video' / 'hmdb51' / 'manifest.json'}")
    assert err.strip() == f"run with: pebench run --tasks video/hmdb51 --data-dir {tmp_path}"


def test_index_sha256_covers_paths_labels_sizes():
    base = V.index_sha256(["a", "b"], np.array([0, 1]), [10, 20])
    assert base != V.index_sha256(["a", "c"], np.array([0, 1]), [10, 20])
    assert base != V.index_sha256(["a", "b"], np.array([0, 2]), [10, 20])
    assert base != V.index_sha256(["a", "b"], np.array([0, 1]), [10, 21])
    assert base == V.index_sha256(["a", "b"], np.array([0, 1]), [10, 20])


def test_ssv2_prepare_and_roles(ssv2, tmp_path):
    spec = small("video/ssv2")
    (report,) = V.prepare_video(spec, ssv2.parent, tmp_path)  # a root holding "ssv2"
    assert report.splits == {"train": 30, "train90": 27, "val": 6, "val10": 3}
    test = V.video_split(spec, "test", tmp_path, P, ZERO, ONE, 0, False)
    assert len(test) == 6 and test.views == 6
    assert [round(vg.decode_class(test[i][0][0, 1].mean().item() * 255)) for i in range(6)] == [
        int(v) for v in test.labels
    ]
