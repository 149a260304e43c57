"""FGVC (5 fine-grained datasets) with the VPT train/val/test JSON splits, through a cache.

Splits from ``KMnP/vpt`` (mirrored by V-PETL Bench): ``<root>/<dataset>/{train,val,test}.json``
mapping an image path to a class id (see :mod:`pebench.datasets.formats` for the image roots and
the label remapping). Prepare with ``pebench prepare fgvc --source json --data-dir <root>``.

Roles: train -> ``train``, val -> ``val``, trainval -> ``train+val`` (the two concatenated:
pebench selects hyperparameters on val, then retrains on train+val), test -> ``test``. The
suite reports the plain mean of the 5 tasks.

=================  ==========================================  ===  ======  =====  =====
task               accepted folder names                        C   train   val    test
=================  ==========================================  ===  ======  =====  =====
fgvc/cub           CUB_200_2011, CUB, cub, cub200               200   5,394    600  5,794
fgvc/nabirds       nabirds, NABirds                             555  21,536  2,393 24,633
fgvc/oxford_flowers OxfordFlowers, OxfordFlower, ...            102   1,020  1,020  6,149
fgvc/stanford_dogs StanfordDogs, Stanford-dogs, ...             120  10,800  1,200  8,580
fgvc/stanford_cars StanfordCars, Stanford-cars, ...             196   7,329    815  8,041
=================  ==========================================  ===  ======  =====  =====
"""

from __future__ import annotations

from pebench.datasets.spec import Suite, TaskSpec, register_suite

VERSION = "fgvc-vpt-1"

#: dataset -> (classes, train, val, test, aliases (VPT DATA.NAME and short forms), title)
TASKS: dict[str, tuple[int, int, int, int, tuple[str, ...], str]] = {
    "cub": (200, 5_394, 600, 5_794, ("CUB", "CUB_200_2011", "cub200"), "CUB-200-2011 birds"),
    "nabirds": (555, 21_536, 2_393, 24_633, ("NABirds",), "NABirds"),
    "oxford_flowers": (102, 1_020, 1_020, 6_149, ("OxfordFlowers", "flowers"), "Oxford Flowers"),
    "stanford_dogs": (120, 10_800, 1_200, 8_580, ("StanfordDogs", "dogs"), "Stanford Dogs"),
    "stanford_cars": (196, 7_329, 815, 8_041, ("StanfordCars", "cars"), "Stanford Cars"),
}

SPLITS = {"train": "train", "val": "val", "trainval": "train+val", "test": "test"}


def _spec(name: str) -> TaskSpec:
    classes, train, val, test, aliases, title = TASKS[name]
    return TaskSpec(
        name=f"fgvc/{name}",
        suite="fgvc",
        group="fgvc",
        num_classes=classes,
        version=VERSION,
        data_format="vpt-json",
        splits=dict(SPLITS),
        loader="pebench.datasets.cache:LOADER",
        aliases=tuple(f"fgvc/{a}" for a in aliases),
        description=f"{title}, {classes} classes (VPT json splits)",
        sizes={"train": train, "val": val, "train+val": train + val, "test": test},
    )


SPECS = [_spec(n) for n in TASKS]

register_suite(
    Suite(
        name="fgvc",
        tasks=tuple(s.name for s in SPECS),
        aggregate="mean",
        default_budget="fgvc-v3",
        description="FGVC, 5 fine-grained datasets with VPT splits (pebench prepare fgvc first)",
    ),
    SPECS,
)
