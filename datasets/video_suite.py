"""The video suite's task declarations (SSv2, HMDB51 splits 1-3); data code is in ``video``.

Declared apart from :mod:`pebench.datasets.video` so that registering the suite imports no
decoding, sampling or preparing code (see that module for lists, roles and clip sampling).
"""

from __future__ import annotations

from pebench.datasets.spec import Suite, TaskSpec, register_suite

VERSION = "video-1"
#: HMDB51 task -> official split number
HMDB_SPLITS = {"video/hmdb51": 1, "video/hmdb51_split2": 2, "video/hmdb51_split3": 3}


def _spec(name: str, classes: int, fmt: str, test: str, aliases: tuple, desc: str) -> TaskSpec:
    return TaskSpec(
        name=name,
        suite="video",
        group=name.split("/")[1].split("_")[0],
        num_classes=classes,
        version=VERSION,
        data_format=fmt,
        splits={"train": "train90", "val": "val10", "trainval": "train", "test": test},
        loader="pebench.datasets.video:LOADER",
        aliases=aliases,
        description=desc,
        modality="video",
    )


SPECS = [
    _spec(
        "video/ssv2",
        174,
        "videomae-list",
        "val",
        ("ssv2", "video/sthv2", "video/something-something-v2"),
        "Something-Something V2, 174 classes (VideoMAE train.csv / val.csv; test = val)",
    ),
    *(
        _spec(
            name,
            51,
            "hmdb51-splits",
            "test",
            (name.split("/")[1], *(("video/hmdb51_split1", "hmdb51_split1") if k == 1 else ())),
            f"HMDB51, 51 classes, official split {k}",
        )
        for name, k in HMDB_SPLITS.items()
    ),
]

register_suite(
    Suite(
        name="video",
        tasks=("video/ssv2", "video/hmdb51"),
        aggregate="mean",
        default_budget="video-v1",
        description="SSv2 + HMDB51 (split 1) action recognition, multi-view test",
    ),
    SPECS,
)

__all__ = ["HMDB_SPLITS", "SPECS", "VERSION"]
