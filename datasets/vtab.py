"""VTAB-1k (19 tasks) read from the NOAH image folders, through a prepared cache.

Source of the task definitions: ``google-research/task_adaptation`` and arXiv 1910.04867; the
files are NOAH's ``get_vtab1k.py`` output (``<root>/<task>/{train800,val200,train800val200,
test}.txt`` + ``images/``), the copy used by NOAH, FacT, Convpass, RepAdapter, ARC, SSF and
V-PETL Bench. Run ``pebench prepare vtab --source noah --data-dir <vtab-1k root> --cache-dir
<cache>`` once, then ``pebench run --tasks vtab --data-dir <cache>`` (the runner's data folder
is the cache; see :mod:`pebench.datasets.cache`).

Roles: train -> ``train800``, val -> ``val200``, trainval -> ``train800val200``, test ->
``test`` (the full VTAB test split). Groups: natural (7), specialized (4), structured (8);
select one with ``vtab:structured``. The suite aggregates as VTAB does: the mean over the 19
tasks and the mean of the three group means, both reported.

Two data formats: ``noah-jpeg`` (the tasks' own format) and ``tfds`` (``pebench prepare vtab
--source tfds --data-dir <TFDS data_dir>``, task_adaptation's builders, split strings and label
rules: :mod:`pebench.datasets.tfds_source`). NOAH's lossy JPEG copies give different numbers
from TFDS tensors (CIFAR-100 especially, ``visinf/adapter_plus#3``); results from the two formats
are not comparable, a cache folder holds one of them, and every row records which one it used.
"""

from __future__ import annotations

from pebench.datasets.spec import Suite, TaskSpec, register_suite

VERSION = "vtab-noah-1"

#: NOAH folder -> (group, classes, test size, names used by other code bases, description)
TASKS: dict[str, tuple[str, int, int, tuple[str, ...], str]] = {
    "cifar": ("natural", 100, 10_000, ("cifar100", "cifar_100"), "CIFAR-100"),
    "caltech101": ("natural", 102, 6_084, (), "Caltech-101 (with the background class)"),
    "dtd": ("natural", 47, 1_880, (), "Describable Textures"),
    "oxford_flowers102": ("natural", 102, 6_149, ("flowers102",), "Oxford Flowers-102"),
    "oxford_iiit_pet": ("natural", 37, 3_669, ("oxford_pet", "pets", "pet"), "Oxford-IIIT Pet"),
    "svhn": ("natural", 10, 26_032, (), "SVHN (cropped digits)"),
    "sun397": ("natural", 397, 21_750, (), "SUN397 scenes"),
    "patch_camelyon": ("specialized", 2, 32_768, ("camelyon",), "PatchCamelyon histopathology"),
    "eurosat": ("specialized", 10, 5_400, (), "EuroSAT RGB satellite images"),
    "resisc45": ("specialized", 45, 6_300, (), "RESISC45 remote sensing scenes"),
    "diabetic_retinopathy": (
        "specialized",
        5,
        42_670,
        ("retinopathy",),
        "Diabetic retinopathy grade (btgraham-300)",
    ),
    "clevr_count": ("structured", 8, 15_000, (), "CLEVR: number of objects (3-10)"),
    "clevr_dist": (
        "structured",
        6,
        15_000,
        ("clevr_distance",),
        "CLEVR: distance bin of the closest object",
    ),
    "dmlab": ("structured", 6, 22_735, (), "DMLab: distance/reward class of the frame"),
    "kitti": ("structured", 4, 711, (), "KITTI: distance bin of the closest vehicle"),
    "dsprites_loc": ("structured", 16, 73_728, ("dsprites_position",), "dSprites: x position"),
    "dsprites_ori": (
        "structured",
        16,
        73_728,
        ("dsprites_orientation",),
        "dSprites: orientation",
    ),
    "smallnorb_azi": ("structured", 18, 12_150, ("smallnorb_azimuth",), "smallNORB: azimuth"),
    "smallnorb_ele": ("structured", 9, 12_150, ("smallnorb_elevation",), "smallNORB: elevation"),
}

SPLITS = {"train": "train800", "val": "val200", "trainval": "train800val200", "test": "test"}

# dSprites renders every latent combination; shapes with rotational symmetry (square, ellipse)
# give pixel-identical images for different orientation values, so a random 80/10/10 split puts
# some of them in both train and test. Recorded in the manifest, not an error.
KNOWN_OVERLAP = {
    folder: "dSprites: symmetric shapes render identical images"
    for folder in ("dsprites_loc", "dsprites_ori")
}
#: every task can also be prepared from TFDS builders (pebench.datasets.tfds_source.TASKS)
EXTRA_FORMATS = ("tfds",)


def _spec(folder: str) -> TaskSpec:
    group, classes, test_size, aliases, desc = TASKS[folder]
    return TaskSpec(
        name=f"vtab/{folder}",
        suite="vtab",
        group=group,
        num_classes=classes,
        version=VERSION,
        data_format="noah-jpeg",
        splits=dict(SPLITS),
        loader="pebench.datasets.cache:LOADER",
        aliases=tuple(f"vtab/{a}" for a in aliases),
        description=f"{desc}, {classes} classes (NOAH folder {folder!r})",
        sizes={"train800": 800, "val200": 200, "train800val200": 1000, "test": test_size},
        known_overlap=KNOWN_OVERLAP.get(folder, ""),
        extra_formats=EXTRA_FORMATS,
    )


SPECS = [_spec(f) for f in TASKS]

register_suite(
    Suite(
        name="vtab",
        tasks=tuple(s.name for s in SPECS),
        aggregate="vtab",
        default_budget="vtab1k-v3",
        description="VTAB-1k, 19 tasks from NOAH image folders (pebench prepare vtab first)",
        aliases=("vtab1k",),
    ),
    SPECS,
)
