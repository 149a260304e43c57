"""docs/data.md states the names and sizes the code reads: folders, list files, sizes, builders."""

import re
from pathlib import Path

from pebench.datasets import fewshot, fgvc, get_task, vtab
from pebench.datasets import tfds_source as T
from pebench.datasets import video as V
from pebench.datasets import video_suite as VS
from pebench.datasets.formats import COOP_DATASETS, VPT_DATASETS, noah_split

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "data.md").read_text(encoding="utf-8")


def _section(title):
    return DOC.split(f"\n## {title}", 1)[1].split("\n## ", 1)[0]


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(title):
    """Rows of the (first) table of a section, as header -> cell."""
    lines = [ln for ln in _section(title).splitlines() if ln.startswith("|")]
    header = _cells(lines[0])
    return [dict(zip(header, _cells(ln), strict=True)) for ln in lines[2:]]


def _code(cell):
    return re.findall(r"`([^`]*)`", cell)


def _line(title, start):
    (line,) = [p for p in _section(title).split("\n\n") if p.startswith(start)]
    return " ".join(line.split())


def _tfds_val(task):
    return f"{task.val}[:200]" if isinstance(task.val, str) else f"train[{task.val}*n//100:][:200]"


def _tfds_test(task):
    if isinstance(task.test, str):
        return task.test
    a, b = task.test
    return f"train[{a}*n//100+{b}*n//100:]"


def test_readme_links_the_data_page():
    assert "docs/data.md" in (ROOT / "README.md").read_text()


def test_vtab_folders_sizes_and_builders_are_the_codes():
    rows = _table("VTAB-1k")
    assert [_code(r["task folder"])[0] for r in rows] == list(vtab.TASKS)
    for r in rows:
        folder = _code(r["task folder"])[0]
        group, classes, test, _, _ = vtab.TASKS[folder]
        spec = get_task(f"vtab/{folder}")
        assert (r["group"], int(r["classes"])) == (group, classes) == (spec.group, spec.num_classes)
        sizes = {s: int(r[s]) for s in ("train800", "val200", "train800val200", "test")}
        assert sizes == spec.sizes and sizes["test"] == test
        task = T.TASKS[folder]
        assert _code(r["TFDS builder"]) == [task.builder]
        assert _code(r["TFDS version"]) == list(task.versions)
        assert _code(r["TFDS val200"]) == [_tfds_val(task)]
        assert _code(r["TFDS test"]) == [_tfds_test(task)]


def test_noah_list_names_are_the_ones_read(tmp_path):
    names = _code(_line("VTAB-1k", "List files:"))
    assert names == [f"{s}.txt" for s in vtab.SPLITS.values()]
    task = tmp_path / "kitti"
    task.mkdir()
    for name in names:  # the reader opens exactly these files
        (task / name).write_text("images/x/000000.jpg 0\n")
    for split in vtab.SPLITS.values():
        assert noah_split(tmp_path, "kitti", split).list_file.name in names
    example = _code(_section("VTAB-1k").split("e.g.", 1)[1])[0]
    assert re.fullmatch(r"images/train800/\d{6}\.jpg \d+", example)


def test_fgvc_folders_roots_and_sizes_are_the_codes():
    rows = _table("FGVC")
    assert [_code(r["task"])[0] for r in rows] == [f"fgvc/{d}" for d in fgvc.TASKS]
    for r in rows:
        dataset = _code(r["task"])[0].split("/")[1]
        names, roots = VPT_DATASETS[dataset]
        assert _code(r["accepted dataset folder names"]) == list(names)
        assert _code(r["image root"]) == [x for x in roots if x]
        assert ("dataset folder" in r["image root"]) == ("" in roots)
        classes, train, val, test, _, _ = fgvc.TASKS[dataset]
        assert [int(r[k]) for k in ("classes", "train", "val", "test")] == [
            classes,
            train,
            val,
            test,
        ]
    files = _code(_line("FGVC", "Split files:"))
    assert files == [f"{s}.json" for s in ("train", "val", "test")]
    assert {fgvc.SPLITS[r] for r in ("train", "val", "test")} == {"train", "val", "test"}


def test_fewshot_folders_lists_and_sizes_are_the_codes():
    rows = _table("Few-shot")
    assert [_code(r["dataset"])[0] for r in rows] == list(fewshot.DATASETS)
    for r in rows:
        dataset = _code(r["dataset"])[0]
        names, root = COOP_DATASETS[dataset]
        assert _code(r["accepted dataset folder names"]) == list(names)
        assert _code(r["image root"]) == ([root] if root else [])
        classes, val, test, _ = fewshot.DATASETS[dataset]
        assert int(r["classes"]) == classes and r["k-shot list"] == f"k × {classes}"
        assert (int(r["val_meta.list"]), int(r["test_meta.list"])) == (val, test)
    lists = _code(_line("Few-shot", "List files:"))
    pattern, rest = lists[0], lists[1:]
    shots, seeds = rest[: len(fewshot.SHOTS)], rest[len(fewshot.SHOTS) : -2]
    assert [int(k) for k in shots] == list(fewshot.SHOTS)
    assert [int(s) for s in seeds] == list(fewshot.SEEDS)
    for k in fewshot.SHOTS:
        for s in fewshot.SEEDS:
            name = pattern.replace("<k>", str(k)).replace("<s>", str(s))
            assert name == fewshot.train_list(k, s)
            spec = get_task(f"fewshot/oxford_pets/shot{k}/seed{s}")
            assert spec.splits["train"] == name and spec.sizes[name] == k * 37
    assert rest[-2:] == ["val_meta.list", "test_meta.list"]
    spec = get_task("fewshot/food101/shot1/seed0")
    assert [spec.splits["val"], spec.splits["test"]] == rest[-2:]


def test_video_folders_and_lists_are_the_codes():
    rows = _table("Video")
    assert [_code(r["task"])[0] for r in rows] == [s.name for s in VS.SPECS]
    for r in rows:
        spec = get_task(_code(r["task"])[0])
        dataset = "ssv2" if spec.data_format == "videomae-list" else "hmdb51"
        assert _code(r["data format"]) == [spec.data_format]
        assert _code(r["accepted dataset folder names"]) == list(V.FOLDERS[dataset])
        if dataset == "ssv2":
            assert (
                _code(r["lists read"])
                == ["train.csv", "val.csv"]
                == [f"{s}.csv" for s in ("train", spec.splits["test"])]
            )
        else:
            k = VS.HMDB_SPLITS[spec.name]
            assert _code(r["lists read"]) == [f"{V.HMDB_SPLIT_DIR}/<class>_test_split{k}.txt"]
    text = " ".join(_section("Video").split())
    assert f"round({round(V.VAL_FRACTION * 100)} %)" in text
    assert f"`({V.CARVE_SEED}, class id)`" in text
