"""Few-shot FGVC (NOAH / FacT protocol): 5 datasets × shots {1, 2, 4, 8, 16} × seeds {0, 1, 2}.

Lists from CoOp (arXiv 2109.01134) as shipped in ``ZhangYuanhan-AI/NOAH``
``data/few-shot/<dataset>/annotations/`` (format in :mod:`pebench.datasets.formats`). Prepare with
``pebench prepare fewshot --source coop --data-dir <root>``; every task of a dataset shares one
cache folder, so the large val and test arrays are stored once.

Task ids: ``fewshot/<dataset>/shot<k>/seed<s>`` (75 tasks). The CoOp split seed is part of the
task, not the run seed: a split seed changes the *data*, so results of different split seeds
are different tasks, and the suite's plain mean over all 75 equals the mean over (dataset, shot)
of the per-seed means the papers report. Groups are ``shot1`` .. ``shot16``: ``fewshot:shot16``
selects the 15 tasks of one shot count.

Roles: train -> the k-shot list, val -> ``val_meta.list``, **trainval -> the k-shot list again**
(the few-shot protocol trains only on the k-shot images; adding the val list, e.g. 20,200
Food-101 images, would make it a different, data-rich protocol), test -> ``test_meta.list``.

Quirk: the oxford-pets 1-shot lists name every image twice (74 lines, 37 images); pebench
removes the repeats, records the count in the cache manifest and marks those tasks' version
(``coop-1-dedup``). ImageNet (domain generalization) is not included.

=================  ======================================  ====  =======  ======
dataset            accepted folder names                    C    val      test
=================  ======================================  ====  =======  ======
fgvc_aircraft      fgvc_aircraft, fgvc-aircraft             100    3,333   3,333
food101            food-101, food101, food_101              101   20,200  30,300
oxford_flowers102  oxford_flowers102, oxford-flowers102     102    1,633   2,463
oxford_pets        oxford_pets, oxford-pets                  37      736   3,669
stanford_cars      stanford_cars, standford-cars, ...       196    1,635   8,041
=================  ======================================  ====  =======  ======
"""

from __future__ import annotations

from pebench.datasets.spec import Suite, TaskSpec, register_suite

VERSION = "coop-1"
SHOTS = (1, 2, 4, 8, 16)
SEEDS = (0, 1, 2)

#: dataset -> (classes, val size, test size, title)
DATASETS: dict[str, tuple[int, int, int, str]] = {
    "fgvc_aircraft": (100, 3_333, 3_333, "FGVC-Aircraft"),
    "food101": (101, 20_200, 30_300, "Food-101"),
    "oxford_flowers102": (102, 1_633, 2_463, "Oxford Flowers-102"),
    "oxford_pets": (37, 736, 3_669, "Oxford-IIIT Pets"),
    "stanford_cars": (196, 1_635, 8_041, "Stanford Cars"),
}


def train_list(shot: int, seed: int) -> str:
    """File name of a CoOp k-shot list."""
    return f"train_meta.list.num_shot_{shot}.seed_{seed}"


def _spec(dataset: str, shot: int, seed: int) -> TaskSpec:
    classes, val, test, title = DATASETS[dataset]
    train = train_list(shot, seed)
    dedup = dataset == "oxford_pets" and shot == 1
    return TaskSpec(
        name=f"fewshot/{dataset}/shot{shot}/seed{seed}",
        suite="fewshot",
        group=f"shot{shot}",
        num_classes=classes,
        version=f"{VERSION}-dedup" if dedup else VERSION,
        data_format="coop-list",
        splits={
            "train": train,
            "val": "val_meta.list",
            "trainval": train,
            "test": "test_meta.list",
        },
        loader="pebench.datasets.cache:LOADER",
        description=f"{title}, {shot}-shot, CoOp split seed {seed}, {classes} classes"
        + (" (repeated lines removed)" if dedup else ""),
        sizes={train: classes * shot, "val_meta.list": val, "test_meta.list": test},
    )


SPECS = [_spec(d, k, s) for d in DATASETS for k in SHOTS for s in SEEDS]

register_suite(
    Suite(
        name="fewshot",
        tasks=tuple(s.name for s in SPECS),
        aggregate="mean",
        default_budget="fewshot-v3",
        description="few-shot FGVC, 5 datasets x 5 shots x 3 CoOp seeds (prepare first)",
        aliases=("few-shot",),
    ),
    SPECS,
)
