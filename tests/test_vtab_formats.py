"""Real-suite registry (VTAB-1k, FGVC, few-shot) and the source-format readers."""

import json

import numpy as np
import pytest
from PIL import Image

from pebench.datasets import get_suite, get_task, resolve_tasks, suites, tasks
from pebench.datasets.formats import (
    FormatError,
    ImageError,
    coop_split,
    decode_image,
    noah_split,
    parse_list,
    read_vpt_json,
    vpt_splits,
)
from pebench.registry import RegistryError

# ------------------------------------------------------------------------------ registry --
VTAB_TEST_SIZES = {
    "cifar": 10_000, "caltech101": 6_084, "dtd": 1_880, "oxford_flowers102": 6_149,
    "oxford_iiit_pet": 3_669, "svhn": 26_032, "sun397": 21_750, "patch_camelyon": 32_768,
    "eurosat": 5_400, "resisc45": 6_300, "diabetic_retinopathy": 42_670, "clevr_count": 15_000,
    "clevr_dist": 15_000, "dmlab": 22_735, "kitti": 711, "dsprites_loc": 73_728,
    "dsprites_ori": 73_728, "smallnorb_azi": 12_150, "smallnorb_ele": 12_150,
}  # fmt: skip
VTAB_CLASSES = [100, 102, 47, 102, 37, 10, 397, 2, 10, 45, 5, 8, 6, 6, 4, 16, 16, 18, 9]


def test_vtab_suite_definition():
    suite = get_suite("vtab")
    assert get_suite("vtab1k") is suite
    assert (suite.aggregate, suite.default_budget) == ("vtab", "vtab1k-v3")
    assert list(suite.tasks) == [f"vtab/{t}" for t in VTAB_TEST_SIZES]
    specs = [get_task(t) for t in suite.tasks]
    assert [s.num_classes for s in specs] == VTAB_CLASSES
    groups = [s.group for s in specs]
    assert groups == ["natural"] * 7 + ["specialized"] * 4 + ["structured"] * 8
    for s in specs:
        folder = s.name.split("/")[1]
        assert s.splits == {
            "train": "train800",
            "val": "val200",
            "trainval": "train800val200",
            "test": "test",
        }
        assert s.sizes == {
            "train800": 800,
            "val200": 200,
            "train800val200": 1000,
            "test": VTAB_TEST_SIZES[folder],
        }
        assert (s.data_format, s.version) == ("noah-jpeg", "vtab-noah-1")
        assert s.data_formats == ("noah-jpeg", "tfds")  # a cache holds one of the two
        assert s.loader == "pebench.datasets.cache:LOADER"
    # mean head size of §9 (769 * C averaged over 19 tasks) pins the class counts
    assert round(np.mean([769 * c for c in VTAB_CLASSES])) == 38_045


@pytest.mark.parametrize(
    "alias,task",
    [
        ("vtab/cifar100", "cifar"),
        ("vtab/cifar_100", "cifar"),
        ("vtab/oxford_pet", "oxford_iiit_pet"),
        ("vtab/pets", "oxford_iiit_pet"),
        ("vtab/pet", "oxford_iiit_pet"),
        ("vtab/flowers102", "oxford_flowers102"),
        ("vtab/camelyon", "patch_camelyon"),
        ("vtab/retinopathy", "diabetic_retinopathy"),
        ("vtab/clevr_distance", "clevr_dist"),
        ("vtab/dsprites_position", "dsprites_loc"),
        ("vtab/dsprites_orientation", "dsprites_ori"),
        ("vtab/smallnorb_azimuth", "smallnorb_azi"),
        ("vtab/smallnorb_elevation", "smallnorb_ele"),
    ],
)
def test_vtab_aliases(alias, task):
    assert get_task(alias).name == f"vtab/{task}"


def test_names_and_aliases_are_unique_across_suites():
    names = list(tasks())
    aliases = [a for s in tasks().values() for a in s.aliases]
    assert len(set(aliases)) == len(aliases)
    assert not set(aliases) & set(names)
    assert {"vtab", "vtab1k", "fgvc", "fewshot", "demo"} <= set(suites())


def test_fgvc_and_fewshot_definitions():
    fgvc = [get_task(t) for t in get_suite("fgvc").tasks]
    assert [(s.name, s.num_classes) for s in fgvc] == [
        ("fgvc/cub", 200),
        ("fgvc/nabirds", 555),
        ("fgvc/oxford_flowers", 102),
        ("fgvc/stanford_dogs", 120),
        ("fgvc/stanford_cars", 196),
    ]
    cub = get_task("fgvc/CUB")
    assert cub.splits["trainval"] == "train+val" and cub.data_format == "vpt-json"
    assert cub.sizes == {"train": 5394, "val": 600, "train+val": 5994, "test": 5794}
    assert get_task("fgvc/nabirds").sizes["test"] == 24_633

    few = get_suite("fewshot")
    assert len(few.tasks) == 75 and few.aggregate == "mean"
    pets1 = get_task("fewshot/oxford_pets/shot1/seed2")
    assert pets1.splits == {
        "train": "train_meta.list.num_shot_1.seed_2",
        "val": "val_meta.list",
        "trainval": "train_meta.list.num_shot_1.seed_2",  # no train+val retrain in few-shot
        "test": "test_meta.list",
    }
    assert pets1.sizes["train_meta.list.num_shot_1.seed_2"] == 37  # 74 lines, de-duplicated
    assert pets1.version == "coop-1-dedup"
    assert get_task("fewshot/oxford_pets/shot2/seed0").version == "coop-1"
    cars16 = get_task("fewshot/stanford_cars/shot16/seed0")
    assert cars16.sizes == {
        "train_meta.list.num_shot_16.seed_0": 3136,
        "val_meta.list": 1635,
        "test_meta.list": 8041,
    }
    assert get_task("fewshot/food101/shot4/seed1").sizes["test_meta.list"] == 30_300


def test_group_selector():
    structured = resolve_tasks("vtab:structured")
    assert [t.name.split("/")[1] for t in structured] == list(VTAB_TEST_SIZES)[11:]
    mixed = resolve_tasks("vtab/kitti,vtab:specialized,vtab/eurosat")
    assert [t.name for t in mixed] == [
        "vtab/kitti",
        "vtab/patch_camelyon",
        "vtab/eurosat",
        "vtab/resisc45",
        "vtab/diabetic_retinopathy",
    ]
    assert len(resolve_tasks("vtab1k:natural")) == 7
    assert {t.name.split("/")[2] for t in resolve_tasks("fewshot:shot16")} == {"shot16"}
    assert len(resolve_tasks("fewshot:shot16")) == 15
    with pytest.raises(RegistryError, match="unknown group of suite 'vtab' 'strucured'.*"):
        resolve_tasks("vtab:strucured")
    with pytest.raises(RegistryError, match="Did you mean 'vtab'"):
        resolve_tasks("vtb:natural")


# ------------------------------------------------------------------------------- helpers --
def _img(path, value, size=8, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size, size, 3), value, np.uint8)
    arr[0, 0] = (value * 7) % 256
    Image.fromarray(arr).convert(mode).save(path)


# ---------------------------------------------------------------------------------- lists --
def test_parse_list_splits_on_the_last_space(tmp_path):
    f = tmp_path / "list"
    f.write_bytes(b"a b/c d.jpg 3\r\n\nplain.jpg 0\n  \n")
    assert parse_list(f) == [("a b/c d.jpg", 3, 1), ("plain.jpg", 0, 3)]


@pytest.mark.parametrize(
    "content,line,what",
    [
        ("a.jpg 1\nb.jpg\n", 2, "expected '<relative path> <integer label>'"),
        ("a.jpg 1\nb.jpg 2\nc.jpg x\n", 3, "expected"),
        ("a.jpg 1.5\n", 1, "expected"),
        ("/abs/a.jpg 1\n", 1, "must be relative"),
        ("ok.jpg 0\n../up.jpg 1\n", 2, "must be relative"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, content, line, what):
    f = tmp_path / "train800.txt"
    f.write_text(content)
    with pytest.raises(FormatError, match=rf"{f} line {line}: .*{what}"):
        parse_list(f)


def test_noah_split_paths_and_errors(tmp_path):
    task = tmp_path / "dtd"
    task.mkdir()
    (task / "val200.txt").write_text("images/val200/000000.jpg 4\nimages/val200/000001.jpg 0\n")
    sl = noah_split(tmp_path, "dtd", "val200")
    assert sl.paths == [task / "images/val200/000000.jpg", task / "images/val200/000001.jpg"]
    assert sl.labels.tolist() == [4, 0] and sl.labels.dtype == np.int64
    assert sl.lines == [1, 2] and sl.list_file == task / "val200.txt"
    with pytest.raises(FormatError, match=r"missing list file .*dtd/test.txt"):
        noah_split(tmp_path, "dtd", "test")
    with pytest.raises(FormatError, match=r"no NOAH task folder .*/kitti"):
        noah_split(tmp_path, "kitti", "test")


# ------------------------------------------------------------------------------- VPT json --
def _vpt(root, folder, files):
    d = root / folder
    d.mkdir(parents=True)
    for split, mapping in files.items():
        (d / f"{split}.json").write_text(json.dumps(mapping, indent=1))
    return d


def test_vpt_json_remaps_sorted_ids_over_all_files(tmp_path):
    d = _vpt(
        tmp_path,
        "Stanford-dogs",
        {
            "train": {"n1-a/1.jpg": 10, "n2-b/2.jpg": 3, "n3-c/3.jpg": 7},
            "val": {"n2-b/4.jpg": 3},  # class 7 and 10 absent: must not shift labels
            "test": {"n1-a/5.jpg": 10, "n3-c/6.jpg": 7},
        },
    )
    (d / "Images" / "n1-a").mkdir(parents=True)
    (d / "Images" / "n1-a" / "1.jpg").write_bytes(b"")
    out = vpt_splits(tmp_path, "stanford_dogs", ["train", "val", "test"], num_classes=3)
    # numeric sort: 3 -> 0, 7 -> 1, 10 -> 2 (a string sort would put 10 first)
    assert out["train"].labels.tolist() == [2, 0, 1]
    assert out["val"].labels.tolist() == [0]
    assert out["test"].labels.tolist() == [2, 1]
    assert out["train"].paths[0] == d / "Images" / "n1-a/1.jpg"  # VPT: dogs under Images/
    assert out["val"].lines == [2]
    assert "2 classes absent from val.json" in out["val"].notes
    with pytest.raises(FormatError, match=r"3 distinct class ids .* expected 120"):
        vpt_splits(tmp_path, "stanford_dogs", ["train"], num_classes=120)
    with pytest.raises(FormatError, match=r"no VPT-json 'cub' folder .*tried CUB_200_2011"):
        vpt_splits(tmp_path, "cub", ["train"], num_classes=3)


def test_vpt_image_roots(tmp_path):
    files = {s: {"001.Bird/a.jpg": 1} for s in ("train", "val", "test")}
    cub = _vpt(tmp_path, "CUB_200_2011", files)
    flowers = _vpt(tmp_path, "OxfordFlowers", {s: {"jpg/image_1.jpg": 5} for s in files})
    assert vpt_splits(tmp_path, "cub", ["test"], 1)["test"].paths == [
        cub / "images" / "001.Bird/a.jpg"
    ]
    assert vpt_splits(tmp_path, "oxford_flowers", ["val"], 1)["val"].paths == [
        flowers / "jpg/image_1.jpg"
    ]


@pytest.mark.parametrize(
    "text,line,what",
    [
        ('{\n "a.jpg": 1,\n "b.jpg": 2\n "c.jpg": 3\n}', 4, "invalid JSON"),
        ('{\n "a.jpg": 1,\n "b.jpg": "2"\n}', 3, "class id of 'b.jpg' is '2', not an integer"),
        ('{\n "a.jpg": 1,\n "b.jpg": 2,\n "a.jpg": 1\n}', 4, "duplicate image key 'a.jpg'"),
        ('[\n ["a.jpg", 1]\n]', 1, "expected a JSON object"),
        ('{\n "a.jpg": true\n}', 2, "not an integer"),
    ],
)
def test_vpt_json_errors_name_file_and_line(tmp_path, text, line, what):
    f = tmp_path / "train.json"
    f.write_text(text)
    with pytest.raises(FormatError, match=rf"{f} line {line}: .*{what}"):
        read_vpt_json(f)


# ----------------------------------------------------------------------------------- CoOp --
def test_coop_lists_dedup_and_image_roots(tmp_path):
    ann = tmp_path / "oxford-pets" / "annotations"
    ann.mkdir(parents=True)
    lines = [f"Abyssinian {i}.jpg 0\nbeagle {i}.jpg 1\n" for i in range(2)]
    (ann / "train_meta.list.num_shot_1.seed_0").write_text("".join(lines[:1] * 2))
    sl = coop_split(tmp_path, "oxford_pets", "train_meta.list.num_shot_1.seed_0")
    assert sl.paths == [tmp_path / "oxford-pets/images/Abyssinian 0.jpg",
                        tmp_path / "oxford-pets/images/beagle 0.jpg"]  # fmt: skip
    assert sl.labels.tolist() == [0, 1] and sl.lines == [1, 2]
    assert sl.notes == ["removed 2 repeated lines"]

    (ann / "val_meta.list").write_text("a.jpg 0\nb.jpg 1\na.jpg 1\n")
    with pytest.raises(FormatError, match=r"val_meta.list line 3: 'a.jpg' has label 1, but .*0"):
        coop_split(tmp_path, "oxford_pets", "val_meta.list")

    cars = tmp_path / "standford-cars" / "annotations"  # the misspelt NOAH folder
    cars.mkdir(parents=True)
    (cars / "test_meta.list").write_text("cars_test/00001.jpg 195\n")
    sl = coop_split(tmp_path, "stanford_cars", "test_meta.list")
    assert sl.paths == [tmp_path / "standford-cars/cars_test/00001.jpg"]  # no images/
    with pytest.raises(FormatError, match=r"no few-shot 'food101' folder .*food-101, food101"):
        coop_split(tmp_path, "food101", "test_meta.list")


# --------------------------------------------------------------------------------- images --
def test_decode_image_resizes_and_digests(tmp_path):
    _img(tmp_path / "a.jpg", 100, size=12)
    _img(tmp_path / "b.png", 100, size=12)
    _img(tmp_path / "c.png", 101, size=12)
    _img(tmp_path / "g.png", 50, size=12, mode="L")
    a, da = decode_image(tmp_path / "a.jpg", 5)
    b, db = decode_image(tmp_path / "b.png", 5)
    c, dc = decode_image(tmp_path / "c.png", 5)
    g, _ = decode_image(tmp_path / "g.png", 12)
    assert a.shape == (5, 5, 3) and a.dtype == np.uint8 and len(da) == 16
    assert db != dc and decode_image(tmp_path / "b.png", 7)[1] == db  # digest of the source
    with Image.open(tmp_path / "b.png") as im:
        want = np.asarray(im.convert("RGB").resize((5, 5), Image.BICUBIC))
    assert np.array_equal(b, want)
    assert g.shape == (12, 12, 3) and np.all(g[..., 0] == g[..., 2])  # grayscale -> RGB


def test_missing_and_corrupt_images_name_their_path(tmp_path):
    with pytest.raises(ImageError, match=rf"missing image {tmp_path}/nope.jpg"):
        decode_image(tmp_path / "nope.jpg", 8)
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match=rf"cannot decode image {tmp_path}/junk.jpg"):
        decode_image(tmp_path / "junk.jpg", 8)
    _img(tmp_path / "full.jpg", 9, size=64)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=rf"cannot decode image {tmp_path}/cut.jpg"):
        decode_image(tmp_path / "cut.jpg", 8)
