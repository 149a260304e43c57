"""VTAB-1k from TFDS: split strings, label rules, mock_data through the reader, a real builder
built from generated files and prepared through the CLI, and the errors."""

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pebench.commands.prepare import add_parser
from pebench.commands.prepare import main as cmd_prepare
from pebench.datasets import TaskSpec, get_task, vtab
from pebench.datasets import cache as C
from pebench.datasets import tfds_source as T
from pebench.store import RunStore

tfds = pytest.importorskip("tensorflow_datasets")


# ------------------------------------------------------------------- table, split strings --
# TFDS train sizes (train split of the builder) and the §2 val200 / test strings
REAL = {
    "cifar": (50_000, "train[45000:45200]", "test"),
    "caltech101": (3_060, "train[2754:2954]", "test"),
    "dtd": (1_880, "validation[:200]", "test"),
    "oxford_flowers102": (1_020, "validation[:200]", "test"),
    "oxford_iiit_pet": (3_680, "train[2944:3144]", "test"),
    "svhn": (73_257, "train[65931:66131]", "test"),
    "sun397": (76_128, "validation[:200]", "test"),
    "patch_camelyon": (262_144, "validation[:200]", "test"),
    "eurosat": (27_000, "train[16200:16400]", "train[21600:]"),
    "resisc45": (31_500, "train[18900:19100]", "train[25200:]"),
    "diabetic_retinopathy": (35_126, "validation[:200]", "test"),
    "clevr_count": (70_000, "train[63000:63200]", "validation"),
    "clevr_dist": (70_000, "train[63000:63200]", "validation"),
    "dmlab": (65_550, "validation[:200]", "test"),
    "kitti": (6_347, "validation[:200]", "test"),
    "dsprites_loc": (737_280, "train[589824:590024]", "train[663552:]"),
    "dsprites_ori": (737_280, "train[589824:590024]", "train[663552:]"),
    "smallnorb_azi": (24_300, "test[:200]", "test[50%:]"),
    "smallnorb_ele": (24_300, "test[:200]", "test[50%:]"),
}


def test_table_covers_vtab_and_pins_builders():
    assert list(T.TASKS) == list(vtab.TASKS) == list(REAL)
    for name in vtab.TASKS:
        assert get_task(f"vtab/{name}").data_formats == ("noah-jpeg", "tfds")
    assert get_task("fgvc/cub").data_formats == ("vpt-json",)
    pins = {k: (t.builder, t.versions) for k, t in T.TASKS.items()}
    assert pins["cifar"] == ("cifar100", ("3.*.*",))
    assert pins["sun397"] == ("sun397/tfds", ("4.*.*",))
    assert pins["eurosat"] == ("eurosat/rgb", ("2.*.*",))
    assert pins["diabetic_retinopathy"] == (
        "diabetic_retinopathy_detection/btgraham-300",
        ("3.*.*",),
    )
    assert pins["dmlab"] == ("dmlab", ("2.0.1",))
    assert pins["kitti"] == ("kitti", ("3.1.0", "3.2.0"))
    assert pins["oxford_flowers102"] == ("oxford_flowers102", ("2.*.*",))
    assert {k for k, t in T.TASKS.items() if t.manual} == {"resisc45", "diabetic_retinopathy"}


@pytest.mark.parametrize("task", list(REAL))
def test_split_strings_follow_task_adaptation(task):
    n, val200, test = REAL[task]
    s = T.split_strings(T.TASKS[task], {"train": n, "validation": 1, "test": 1})
    assert s == {
        "train800": "train[:800]",
        "val200": val200,
        "train800val200": f"train[:800]+{val200}",
        "test": test,
    }


def test_carve_out_test_sizes_match_the_registry():
    for task in ("eurosat", "resisc45", "dsprites_loc"):
        n = REAL[task][0]
        start = int(T.split_strings(T.TASKS[task], {"train": n})["test"][6:-2])
        assert n - start == get_task(f"vtab/{task}").sizes["test"]
    assert 24_300 // 2 == get_task("vtab/smallnorb_azi").sizes["test"]
    with pytest.raises(T.TfdsError, match=r"'eurosat/rgb' has no 'train' split"):
        T.split_strings(T.TASKS["eurosat"], {"test": 5})


# ------------------------------------------------------------------------- label rules --
def test_distance_bins_and_regrouping():
    coords = lambda zs: {"objects": {"pixel_coords": np.array([[1, 2, z] for z in zs], "f4")}}  # noqa: E731
    got = [T.clevr_dist(coords([z, 50.0])) for z in (0.5, 8.0, 8.01, 8.7, 9.2, 9.9, 10.0, 12.0)]
    assert got == [0, 0, 1, 2, 3, 4, 4, 5]
    assert T.clevr_dist(coords([0.0])) == -1 and T.clevr_dist(coords([150.0])) == 6  # refused
    assert T.clevr_count({"objects": {"size": np.zeros(7)}}) == 4

    def kitti(types, zs):
        loc = np.array([[0, 0, z] for z in zs], "f4").reshape(-1, 3)
        return T.kitti_dist({"objects": {"type": np.array(types), "location": loc}})

    assert kitti([0, 3], [25.0, 2.0]) == 2  # the pedestrian (type 3) at 2 m is ignored
    assert [kitti([2], [z]) for z in (3.0, 8.0, 8.5, 20.0, 21.0)] == [0, 0, 1, 1, 2]
    assert kitti([4, 5], [1.0, 1.0]) == 3 and kitti([], []) == 3  # no vehicle: 1000 m
    # dSprites: task_adaptation casts to float32 and floor-divides by 32/16 and 40/16
    ori, loc = T.LABEL_RULES["dsprites_ori"], T.LABEL_RULES["dsprites_loc"]
    for v in range(40):
        assert ori({"label_orientation": v}) == int(np.floor(np.float32(v) / np.float32(2.5)))
    assert [ori({"label_orientation": v}) for v in (0, 2, 3, 5, 39)] == [0, 0, 1, 2, 15]
    assert [loc({"label_x_position": v}) for v in range(32)] == [v // 2 for v in range(32)]
    gray = np.array([[[0], [1]]], np.uint8)
    assert T.to_rgb(gray, "gray255").tolist() == [[[0, 0, 0], [255, 255, 255]]]
    assert T.to_rgb(gray, "gray").shape == (1, 2, 3)


# ------------------------------------------------------------------- mock_data, reader --
def _mock_examples(builder, split="train"):
    return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


@pytest.fixture
def mock():
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


@pytest.mark.parametrize(
    "task,expect",
    [
        ("cifar", lambda ex: int(ex["label"])),
        ("dsprites_ori", lambda ex: int(ex["label_orientation"] // 2.5)),
        ("dsprites_loc", lambda ex: int(ex["label_x_position"] // 2)),
        ("smallnorb_azi", lambda ex: int(ex["label_azimuth"])),
        ("smallnorb_ele", lambda ex: int(ex["label_elevation"])),
        ("eurosat", lambda ex: int(ex["label"])),
    ],
)  # fmt: skip
def test_reader_on_mock_data(mock, task, expect):
    t = T.TASKS[task]
    spec = get_task(f"vtab/{task}")
    builder = tfds.builder(f"{t.builder}:{t.versions[0]}")
    # mock builders report no split sizes: the carve-out strings use the real train size
    strings = T.split_strings(t, {"train": REAL[task][0]})
    sl = T.read_split(builder, spec, "test", strings["test"])
    examples = _mock_examples(builder)
    assert sl.labels.dtype == np.int64 and sl.labels.tolist() == [expect(e) for e in examples]
    images = list(sl.stream())
    for got, ex in zip(images, examples, strict=True):
        raw = ex["image"]
        want = raw if t.channels == "rgb" else np.repeat(raw, 3, axis=2)
        want = want * np.uint8(255) if t.channels == "gray255" else want
        assert got.dtype == np.uint8 and got.shape[2] == 3 and np.array_equal(got, want)
    assert sl.source == {
        "builder": t.builder,
        "version": str(builder.version),
        "version_pattern": t.versions[0],
        "split": strings["test"],
        "label_rule": t.label,
        "image_key": "image",
        "channels": t.channels,
    }
    assert sl.where(3) == f"TFDS {builder.info.full_name} split {strings['test']!r} example 3"
    if task == "eurosat":
        assert sl.source["split"] == "train[21600:]"


def _clevr_scenes(self, split, decoders=None, read_config=None, **kw):
    """Random CLEVR scenes whose object sequences agree in length (3-10 objects)."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    scenes = []
    for _ in range(12):
        k = int(rng.integers(3, 11))
        scenes.append(
            {
                "image": rng.integers(0, 256, (6, 5, 3), dtype=np.uint8),
                "objects": {
                    "size": rng.integers(0, 2, k),
                    "pixel_coords": rng.uniform(7.0, 11.0, (k, 3)).astype(np.float32),
                },
            }
        )
    sig = {
        "image": tf.TensorSpec((None, None, 3), tf.uint8),
        "objects": {
            "size": tf.TensorSpec((None,), tf.int64),
            "pixel_coords": tf.TensorSpec((None, 3), tf.float32),
        },
    }
    return tf.data.Dataset.from_generator(lambda: iter(scenes), output_signature=sig)


def test_clevr_label_rules_on_mock_scenes():
    with tfds.testing.mock_data(as_dataset_fn=_clevr_scenes):
        builder = tfds.builder("clevr:3.*.*")
        scenes = _mock_examples(builder)
        thr = np.array([0, 8, 8.5, 9, 9.5, 10, 100])
        for task, expect in (
            ("clevr_count", [len(e["objects"]["size"]) - 3 for e in scenes]),
            ("clevr_dist", [int(np.sum(thr < e["objects"]["pixel_coords"][:, 2].min())) - 1
                            for e in scenes]),
        ):  # fmt: skip
            sl = T.read_split(builder, get_task(f"vtab/{task}"), "val200", "train[63000:63200]")
            assert sl.labels.tolist() == expect
            pairs = zip(sl.stream(), scenes, strict=True)
            assert all(np.array_equal(a, e["image"]) for a, e in pairs)
        assert len(set(expect)) > 2 and set(expect) <= set(range(6))


# ------------------------------------------------- a real builder from generated files --
N_DTD = {"train": 800, "validation": 200, "test": 1880}


def _dtd_builder_cls():
    class Dtd(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """Stands in for TFDS `dtd` 3.0.1: same name and version, images read from PNG files."""

        VERSION = tfds.core.Version("3.0.1")
        code_path = None  # defined in a test: no checksums file beside it

        def __init__(self, *, image_dir, **kw):
            self.image_dir = image_dir
            super().__init__(**kw)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                        "label": tfds.features.ClassLabel(num_classes=47),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {s: self._generate_examples(s) for s in N_DTD}

        def _generate_examples(self, split):
            for path in sorted((self.image_dir / split).iterdir()):
                yield path.name, {"image": path, "label": int(path.stem.split("_")[1])}

    return Dtd


@pytest.fixture(scope="module")
def dtd(tmp_path_factory):
    """A TFDS data_dir holding `dtd/3.0.1` built from generated PNGs (real VTAB sizes)."""
    tmp = tmp_path_factory.mktemp("tfds")
    rng, k = np.random.default_rng(0), 0
    for split, n in N_DTD.items():
        (tmp / "png" / split).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
            arr[0, 0] = [k % 256, k // 256, 7]  # every image distinct
            k += 1
            Image.fromarray(arr).save(tmp / "png" / split / f"{i:05d}_{i % 47}.png")
    builder = _dtd_builder_cls()(image_dir=tmp / "png", data_dir=str(tmp / "data"))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    return tmp


def _cli(argv):
    parser = argparse.ArgumentParser(prog="pebench")
    add_parser(parser.add_subparsers(dest="command"))
    return cmd_prepare(parser.parse_args(["prepare", *argv, "--quiet"]))


def test_cli_prepares_dtd_from_tfds(dtd, capsys):
    data, cache = dtd / "data", dtd / "cache"
    argv = ["vtab/dtd", "--source", "tfds", "--data-dir", str(data), "--cache-dir", str(cache)]
    assert _cli([*argv, "--image-size", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["units"][0]
    assert out["status"] == "written" and out["splits"] == {
        "train800": 800,
        "val200": 200,
        "train800val200": 1000,
        "test": 1880,
    }
    spec = get_task("vtab/dtd")
    read = tfds.builder("dtd:3.*.*", data_dir=str(data))
    for name, split in (
        ("val200", "validation[:200]"),
        ("test", "test"),
        ("train800", "train[:800]"),
    ):
        x, y = C.load(spec, name, cache, 8)
        ref = _mock_examples(read, split)
        assert y.tolist() == [int(e["label"]) for e in ref]
        want = [np.asarray(Image.fromarray(e["image"]).resize((8, 8), Image.BICUBIC)) for e in ref]
        assert np.array_equal(x, np.stack(want))
    x, _ = C.load(spec, "train800val200", cache, 8)
    assert np.array_equal(x[800:], C.load(spec, "val200", cache, 8)[0])

    m = json.loads((cache / "vtab/dtd/8px/manifest.json").read_text())
    assert (m["data_format"], m["resize"]) == ("tfds", C.RESIZE_ARRAYS)
    assert m["source"]["tfds_version"] == tfds.__version__
    assert m["source"]["data_dir"] == str(data.resolve())
    task = m["tasks"]["vtab/dtd"]
    assert task["data_format"] == "tfds" and task["tfds"]["version"] == "3.0.1"
    assert task["tfds"]["builder"] == "dtd" and task["tfds"]["num_examples"] == N_DTD
    assert task["tfds"]["splits"] == {
        "train800": "train[:800]",
        "val200": "validation[:200]",
        "train800val200": "train[:800]+validation[:200]",
        "test": "test",
    }
    assert m["splits"]["val200"]["source"]["split"] == "validation[:200]"
    assert m["splits"]["train800val200"]["notes"] == [
        "equals train800 + val200 (images and labels)"
    ]
    assert "list_file" not in m["splits"]["val200"]
    assert C.describe(spec, cache, 8) == ("tfds", C.manifest_hash(cache, spec, 8))
    with pytest.raises(C.CacheMissingError, match=r"Run: pebench prepare vtab/dtd --source noah"):
        C.describe(spec, cache, 16)

    assert _cli([*argv, "--image-size", "8", "--json"]) == 0  # nothing changed: no re-decode
    assert json.loads(capsys.readouterr().out)["units"][0]["status"] == "up to date"


def _noah_dtd(root, n=4, classes=2):
    d = root / "dtd"
    # split -> the pixel series it holds; NOAH's train800val200 copies train800, then val200
    parts = {"train800": [0], "val200": [1], "train800val200": [0, 1], "test": [3]}
    for split, series in parts.items():
        (d / "images" / split).mkdir(parents=True)
        lines = []
        for k, (j, i) in enumerate((j, i) for j in series for i in range(n)):
            Image.fromarray(np.full((4, 4, 3), 10 * j + i, np.uint8)).save(
                d / "images" / split / f"{k:06d}.png"
            )
            lines.append(f"images/{split}/{k:06d}.png {i % classes}")
        (d / f"{split}.txt").write_text("\n".join(lines) + "\n")


def test_other_lineage_is_refused_unless_forced(dtd, tmp_path):
    cache = tmp_path / "cache"
    _noah_dtd(tmp_path / "noah")
    small = TaskSpec(
        name="vtab/dtd",
        suite="vtab",
        group="natural",
        num_classes=2,
        version=get_task("vtab/dtd").version,
        data_format="noah-jpeg",
        splits=dict(get_task("vtab/dtd").splits),
        loader="pebench.datasets.cache:LOADER",
        sizes={"train800": 4, "val200": 4, "train800val200": 8, "test": 4},
    )
    C.prepare([small], "noah", tmp_path / "noah", cache, 8, allow_overlap=True)
    with pytest.raises(
        C.CacheError,
        match=r"vtab/dtd: the cache .*8px was prepared from data format 'noah-jpeg' \(--source "
        r"noah\), not 'tfds' \(--source tfds\); .*never mixed.*--force",
    ):
        C.prepare("vtab/dtd", "tfds", dtd / "data", cache, 8)
    assert C.describe(small, cache, 8)[0] == "noah-jpeg"  # untouched
    (r,) = C.prepare("vtab/dtd", "tfds", dtd / "data", cache, 8, force=True)
    assert r.status == "written" and C.describe(get_task("vtab/dtd"), cache, 8)[0] == "tfds"
    with pytest.raises(C.CacheError, match=r"prepared from data format 'tfds'"):
        C.prepare([small], "noah", tmp_path / "noah", cache, 8)


def test_label_out_of_range_names_the_tfds_example(dtd, tmp_path):
    import dataclasses

    spec = dataclasses.replace(get_task("vtab/dtd"), num_classes=40)
    ref = _mock_examples(tfds.builder("dtd:3.*.*", data_dir=str(dtd / "data")), "train[:800]")
    i = next(i for i, e in enumerate(ref) if e["label"] >= 40)  # TFDS orders by key hash
    with pytest.raises(
        C.CacheError,
        match=rf"task 'vtab/dtd', split 'train800': label {ref[i]['label']} out of range 0..39 "
        rf"\(TFDS dtd/3.0.1 split 'train\[:800\]' example {i}\)",
    ):
        C.prepare([spec], "tfds", dtd / "data", tmp_path / "cache", 8)
    assert not (tmp_path / "cache" / "vtab" / "dtd" / "8px").exists()


# ------------------------------------------------------------------------------ errors --
def test_missing_builder_names_builder_version_dir_and_hint(tmp_path, capsys):
    argv = ["--source", "tfds", "--data-dir", str(tmp_path), "--cache-dir", str(tmp_path / "c")]
    assert _cli(["vtab/cifar", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"pebench: error: task 'vtab/cifar': TFDS builder 'cifar100' version 3.*.* is not "
        f"prepared in data_dir {tmp_path} ("
    )
    assert f"tfds build cifar100 --data_dir {tmp_path}" in err and "--download" in err
    assert _cli(["vtab/resisc45", *argv]) == 2
    assert (
        "pass --manual-dir <folder with the manually downloaded files>" in capsys.readouterr().err
    )
    assert _cli(["vtab/kitti", *argv]) == 2
    assert "version 3.1.0 or 3.2.0 is not prepared" in capsys.readouterr().err
    assert _cli(["fgvc/cub", *argv]) == 2
    assert "task 'fgvc/cub' is read from data format 'vpt-json'" in capsys.readouterr().err
    assert _cli(["vtab/cifar", "--source", "noah", "--data-dir", str(tmp_path), "--download"]) == 2
    assert "--manual-dir and --download only apply to --source tfds" in capsys.readouterr().err


def test_tensorflow_datasets_missing_gives_the_install_hint(tmp_path):
    code = (
        "import sys; sys.modules['tensorflow_datasets'] = None\n"
        "from pebench.datasets.cache import prepare\n"
        "from pebench.datasets.tfds_source import TfdsError\n"
        "try:\n"
        f"    prepare('vtab/cifar', 'tfds', {str(tmp_path)!r}, {str(tmp_path / 'c')!r}, 8)\n"
        "except TfdsError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(
        "--source tfds needs tensorflow-datasets: pip install 'pebench[tfds]'"
    )


@pytest.mark.slow
def test_arc_runs_the_vtab_protocol_from_tfds_data(dtd, tmp_path):
    """`pebench run --method arc --tasks vtab/dtd` on a TFDS-prepared cache, via the CLI."""
    from pebench.cli import main

    data, cache, out = dtd / "data", tmp_path / "cache", tmp_path / "results"
    argv = ["vtab/dtd", "--source", "tfds", "--data-dir", str(data), "--cache-dir", str(cache)]
    assert _cli([*argv, "--image-size", "32"]) == 0
    run = [
        "run",
        "--method",
        "arc",
        "--tasks",
        "vtab/dtd",
        "--budget",
        "vtab1k-smoke",
        "--data-dir",
        str(cache),
        "--weights",
        "random",
        "--results",
        str(out),
        "--quiet",
    ]
    assert main(run) == 0
    rows = RunStore(out).rows()
    assert sorted(r["phase"] for r in rows) == ["final", "search", "search"]
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    manifest = C.manifest_hash(cache, "vtab/dtd", 32)
    assert {(r["data_format"], r["data_manifest"]) for r in rows} == {("tfds", manifest)}
    assert main(["leaderboard", "--results", str(out), "--output", str(tmp_path / "lb.md")]) == 0
    board = (tmp_path / "lb.md").read_text()
    assert "## vtab" in board and "data format `tfds`" in board
