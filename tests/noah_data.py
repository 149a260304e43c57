"""Fake NOAH-layout task folders and small task specs for ``pebench prepare`` and cache tests."""

import argparse
import os
import shutil

import numpy as np
from PIL import Image

from pebench.commands.prepare import add_parser
from pebench.commands.prepare import main as cmd_prepare
from pebench.datasets import TaskSpec, tasks

NOAH_SPLITS = {"train": "train800", "val": "val200", "trainval": "train800val200", "test": "test"}


class Pixels:
    """Distinct 8x8 images (a counter in the pixels: never two equal images)."""

    def __init__(self, seed=0):
        self.n = 0
        self.rng = np.random.default_rng(seed)

    def save(self, path):
        self.n += 1
        arr = self.rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        arr[0, 0] = [self.n % 256, (self.n // 256) % 256, 0]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path, quality=95)


def make_noah(root, folder, sizes, num_classes, test_files=None, px=None):
    """A NOAH task folder; ``test_files`` < test size makes test images hard links to a pool."""
    px = px or Pixels()
    d = root / folder
    for split in ("train800", "val200", "test"):
        n = sizes[split]
        files = min(n, test_files) if split == "test" and test_files else n
        for i in range(n):
            path = d / "images" / split / f"{i:06d}.jpg"
            if i < files:
                px.save(path)
            else:  # every image is listed once (NOAH lists never repeat a line)
                os.link(path.parent / f"{i % files:06d}.jpg", path)
        lines = [f"images/{split}/{i:06d}.jpg {(i % files) % num_classes}" for i in range(n)]
        (d / f"{split}.txt").write_text("\n".join(lines) + "\n")
    out, k = [], 0
    for split in ("train800", "val200"):  # NOAH writes train800val200 as second copies
        for line in (d / f"{split}.txt").read_text().splitlines():
            rel, label = line.split(" ")
            dst = d / "images" / "train800val200" / f"{k:06d}.jpg"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(d / rel, dst)
            out.append(f"images/train800val200/{k:06d}.jpg {label}")
            k += 1
    (d / "train800val200.txt").write_text("\n".join(out) + "\n")
    return d


def small_spec(name="vtab/kitti", num_classes=4, sizes=None, fmt="noah-jpeg", splits=None, **kw):
    """A test-only task (not registered) with small splits, read by the cache loader.

    It stands in for the registered task of the same name, so it carries that task's data facts
    (known train/test overlap, extra source formats).
    """
    real = tasks().get(name)
    facts = (
        {"known_overlap": real.known_overlap, "extra_formats": real.extra_formats} if real else {}
    )
    return TaskSpec(
        name=name,
        suite=name.split("/")[0],
        group="g",
        num_classes=num_classes,
        version="test-1",
        data_format=fmt,
        splits=splits or dict(NOAH_SPLITS),
        loader="pebench.datasets.cache:LOADER",
        sizes=sizes if sizes is not None else SMALL,
        **{**facts, **kw},
    )


SMALL = {"train800": 8, "val200": 4, "train800val200": 12, "test": 8}


def prepare_main(argv: list[str]) -> int:
    """``pebench prepare ARGV`` in this process; its exit code."""
    parser = argparse.ArgumentParser(prog="pebench")
    add_parser(parser.add_subparsers(dest="command"))
    return cmd_prepare(parser.parse_args(["prepare", *argv]))
