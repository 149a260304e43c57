"""Budgets: the frozen, versioned training protocol, identical for every method.

A budget fixes everything that can move numbers: epochs, batch size, optimizer and schedule,
warmup, the lr × weight-decay grid (so every method gets the same number of trials), image size,
precision and seeds. Changing any of it means a new budget id, never an edit of an old one.

Protocol (VTAB-1k style): each grid point trains on the ``train`` split and is scored on ``val``
(last epoch); the best trial (ties: smaller lr, then smaller weight decay) is retrained on
``trainval`` for every seed and the **last-epoch** ``test`` accuracy is reported. Before the
final phase no test label and no test image reaches a method, its optimizer or the selection; the
one read of the test split by a search run is the cache's train/test overlap check, which hashes
the test images (pixels in, SHA-256 out, labels untouched) to refuse a cache whose test images
also occur in a training split.

This module holds the built-in budgets (:data:`BUDGETS`) and resolves a budget id
(:func:`get_budget`). The types live in :mod:`pebench.budget_types` (re-exported here); a user's
own budget is a file (TOML or JSON) with the same fields, read by :mod:`pebench.budget_file`: its
id is ``file:<file name>@<content hash>``, so an edit of any value is a new budget.
"""

from __future__ import annotations

from dataclasses import replace

from pebench.budget_file import (
    FILE_PREFIX,
    _looks_like_path,
    _stored_budget,
    check_values,
    load_budget_file,
)
from pebench.budget_types import Budget, BudgetError, VideoProtocol
from pebench.registry import RegistryError, suggest

_DEMO = Budget(
    id="demo-v1",
    epochs=10,
    warmup_epochs=1,
    batch_size=32,
    optimizer="adamw",
    lr_grid=(1e-3, 5e-3),
    wd_grid=(1e-4,),
    image_size=32,
    seeds=(0, 1, 2),
    search_seed=0,
    backbone="pebench_vit_micro",
    grad_clip=1.0,
    timeout_s=900.0,
    description="demo suite, micro ViT: 10 epochs, 2 trials, 3 seeds (minutes on CPU)",
    purpose="the first demo protocol (superseded by demo-v2; kept so its rows keep their id)",
)
_SMOKE = replace(
    _DEMO,
    id="demo-smoke",
    epochs=2,
    warmup_epochs=0,
    lr_grid=(1e-3, 1e-2),
    seeds=(0, 1),
    backbone="pebench_vit_test_cls",
    subset=64,
    timeout_s=300.0,
    description="CI smoke test of the full protocol: tiny ViT, random init, 2 epochs, 64 "
    "examples per split",
    # the tiny test ViT has no pretrained weights: random init, so the budget runs offline
    weights="random",
    purpose="checking an install in seconds, offline (numbers measure nothing)",
)
_REAL = Budget(
    id="vtab1k-v1",
    epochs=100,
    warmup_epochs=10,
    batch_size=64,
    optimizer="adamw",
    lr_grid=(1e-4, 1e-3, 1e-2),
    wd_grid=(1e-4,),
    image_size=224,
    seeds=(0, 1, 2),
    search_seed=0,
    backbone="vit_base_patch16_224.orig_in21k",
    grad_clip=1.0,
    timeout_s=6 * 3600.0,
    description="ViT-B/16 orig_in21k, 224 px, 100 epochs (10 warmup), AdamW + cosine, batch 64, "
    "lr {1e-4, 1e-3, 1e-2} x wd 1e-4, seeds 0-2",
    purpose="the first paper-scale protocol (superseded by the -v2 budgets)",
)

# v2 budgets: the search brackets every method's optimum with the same effort. The v1 grids had
# two or three points shared by all methods, and on the committed demo-v1 table every one of the
# 84 (method, task) selections was an edge of its grid (77 the top): the ranking measured how fast
# each method learns at the top lr. The v2 grid is one log-spaced ladder in half-decade steps
# (x3.16), the same for every method and task (nothing per method to tune, no method
# hyper-parameter searched), wide enough that the regimes of full fine-tuning (low lr) and of
# methods with few parameters (prompts, norms, the linear head: high lr) lie inside it. demo-v2
# spans 3e-4..3e-1: a first sweep up to 1e-1 still left 10 of 84 selections on the top edge
# (prompts and LN-tune), so the top point 3e-1 was added (before any demo-v2 result was
# published; trial indices unchanged). Cost: 7 trials instead of 2 (demo, 2x the runs of a
# demo-v1 sweep) and 6 instead of 3 (VTAB-1k, 1.5x).
_DEMO2 = replace(
    _DEMO,
    id="demo-v2",
    lr_grid=(3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
    description="demo suite, micro ViT: 10 epochs, 7 trials (lr 3e-4..3e-1 in half decades), "
    "3 seeds",
    purpose="the demo suite's second protocol (superseded by demo-v3; kept so its rows keep "
    "their id)",
)
# demo-v3: the demo-v2 search (same 7-point ladder, same 3 seeds) at half the epochs. The demo is
# the first thing a newcomer runs: `pebench run --method lora` must finish in under two minutes
# on a 2-core laptop, and demo-v2's 40 runs took 220 s there (measured: 422 core-seconds of
# training, all of it the micro ViT's own compute; the harness runs at the bare loop's speed).
# Halving the epochs halves that; nothing else changes. The ladder still brackets the optimum
# as well as before: on the committed tables 5 of 84 (method, task) selections sit on its top
# edge under demo-v3 (linear, VPT-shallow, AdaptFormer), against 11 under demo-v2.
_DEMO3 = replace(
    _DEMO2,
    id="demo-v3",
    epochs=5,
    description="demo suite, micro ViT: 5 epochs (1 warmup), 7 trials (lr 3e-4..3e-1 in half "
    "decades), 3 seeds",
    purpose="the quick demo's third protocol (superseded by demo-v4, which needs about three "
    "quarters of its CPU time; kept so its rows keep their id)",
)
# demo-v4: demo-v3 with the same ladder span (3e-4..3e-1) in decade steps: 4 trials instead of 7.
# #22 asks the README's first command for <= 2 minutes and <= 220 CPU-seconds summed over its
# processes on 2 cores; demo-v3 took 126-127 s and 242-243 CPU-s on a quiet machine here (and
# 316 CPU-s on another). The search is 7 of a task's 10 runs and about two thirds of its training
# images, and at smoke level (one run per lr, 80 validation images) it is a lottery at half-decade
# resolution anyway; the finals (5 epochs, 3 seeds) are unchanged. Measured alternated with
# demo-v3 on a quiet machine (two runs each): 94-96 s and 177-183 CPU-s against 122-132 s and
# 236-255 CPU-s. The reference table is demo-ref-v2's job.
_DEMO4 = replace(
    _DEMO3,
    id="demo-v4",
    lr_grid=(3e-4, 3e-3, 3e-2, 3e-1),
    description="demo suite, micro ViT: 5 epochs (1 warmup), 4 trials (lr 3e-4..3e-1 in decades), "
    "3 seeds",
    purpose="the quick demo: the README's first command in about a minute and a half on a 2-core "
    "CPU (smoke-level: 3 seeds, one search run per lr a decade apart, 80 validation images; the "
    "reference table is demo-ref-v2)",
)
# demo-ref-v1: the committed reference table, designed with `pebench estimate --precision` (see
# the README's budget table) rather than by habit. demo-v3 traded precision for the two-minute
# first command (5 epochs: the median standard error of a suite mean rose from 0.82 to 1.30 pts
# against demo-v2's 10), and on its rows a selection was decided by one run of 80 validation
# images: ~3 in 10 selections changed with another search seed. Here: demo-v2's 10 epochs and
# 7-lr ladder, 3 search replicates per trial (selection by their mean, diverged replicates count
# 0), the demo-ref suite's larger selection (400) and test (2,000) sets, and the seed count the
# estimator derived for its target (fixed for every row).
_DEMO_REF = replace(
    _DEMO2,
    id="demo-ref-v1",
    seeds=tuple(range(10)),
    search_replicates=3,
    description="demo-ref suite, micro ViT: 10 epochs (1 warmup), 7 trials (lr 3e-4..3e-1) x 3 "
    "search replicates, 10 seeds",
    purpose="the first reference protocol (superseded by demo-ref-v2 before any table was "
    "published under it; kept runnable)",
)
# demo-ref-v2: demo-ref-v1 with the smoothed selection rule (pebench.selection). Under v1's
# highest-mean rule, 4 of 12 (method, task) selections changed with another search-seed offset
# (lora, ssf, adaptformer; #22 asks for <= 15 %), each to an adjacent rung within 0.1-1.4 pts.
# Ranking each rung by its mean smoothed with its lr neighbours (1/4, 1/2, 1/4) changed 1 of the
# same 12, and in 120 half-splits of their 6 replicates 8 % of selections against 34 %, while
# the selected rung scored higher on the held-out half (mean shortfall 0.58 vs 1.21 pts).
_DEMO_REF2 = replace(
    _DEMO_REF,
    id="demo-ref-v2",
    selection="smoothed",
    precision_target=4.5,
    description="demo-ref suite, micro ViT: 10 epochs (1 warmup), 7 trials (lr 3e-4..3e-1) x 3 "
    "search replicates, selection smoothed along the lr ladder, 10 seeds",
    purpose="the committed reference table on the demo tasks (resolves the differences its "
    "seed count was derived for; hours on a 2-core CPU)",
)
_REAL2 = replace(
    _REAL,
    id="vtab1k-v2",
    lr_grid=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    description="ViT-B/16 orig_in21k, 224 px, 100 epochs (10 warmup), AdamW + cosine, batch 64, "
    "lr 1e-4..3e-2 in half decades (6 trials) x wd 1e-4, seeds 0-2",
    purpose="paper numbers on VTAB-1k (GPU)",
)
# v3 real-suite budgets: the v2 recipe and ladder with demo-ref-v2's search (3 replicates per
# trial, smoothed selection) and a seed count derived for a target of 1 pt on the suite mean
# (mainstream PETL methods span about 2 pts of VTAB-1k's mean: protocol.md §12.2). No real-suite
# pilot exists yet (no GPU), so the derivation uses a stated prior instead of
# `pebench estimate --precision`: a per-task seed sd of 2 pts rms (public per-seed spreads are
# mostly below 1 pt with collapses on structured tasks: VPT SVHN 65.9/80.4/81.8/81.5, PEViT KITTI
# 35.3/54.0/54.9). The seed part of the resolvable difference of two K-task means is then about
# 2.8 * 2 * sqrt(2 / (K S)): VTAB-1k (K = 19) 1.05 pts at S = 3, 0.81 at S = 5; FGVC (K = 5)
# 0.79 at S = 5 for its steadier tasks (sd 1); few-shot (75 tasks, one per CoOp list) 0.53 at
# S = 3. S = 5 leaves room under 1 pt for the test and selection terms on VTAB-1k and FGVC; the
# few-shot budget keeps 3 seeds. Rederive from a pilot (`pebench estimate --precision 1
# --results PILOT`) once one has run, as a new budget id.
_REAL3 = replace(
    _REAL2,
    id="vtab1k-v3",
    seeds=tuple(range(5)),
    search_replicates=3,
    selection="smoothed",
    precision_target=1.0,
    description="ViT-B/16 orig_in21k, 224 px, 100 epochs (10 warmup), AdamW + cosine, batch 64, "
    "lr 1e-4..3e-2 in half decades (6 trials) x 3 search replicates, smoothed selection, wd "
    "1e-4, seeds 0-4",
    purpose="paper numbers on VTAB-1k with a precision target (GPU; about 2.6x a vtab1k-v2 sweep)",
)

# A small but real budget for checking a setup on real data: the v2 recipe (ViT-B/16 from the
# hub, 224 px, batch 64, AdamW + cosine) with 5 epochs, one lr and one seed, so that one task
# checks the prepared data, the weights and the device in minutes; numbers are not comparable to
# the v2 budgets. Any image suite (VTAB-1k, FGVC, few-shot).
_CHECK = replace(
    _REAL2,
    id="check-v1",
    epochs=5,
    warmup_epochs=1,
    lr_grid=(1e-3,),
    seeds=(0,),
    timeout_s=3600.0,
    description="ViT-B/16 orig_in21k, 224 px, 5 epochs (1 warmup), AdamW + cosine, batch 64, "
    "lr 1e-3 x wd 1e-4, seed 0",
    purpose="checking a setup on real data (any image suite: prepared data, hub weights, "
    "device) in minutes per task; not comparable to the v2 budgets",
)

# The same check offline and on a CPU: the embedded micro ViT (pretrained on fractals, shipped in
# the package: no hub) at 32 px on any prepared image suite (prepare it with --image-size 32),
# 10 epochs, two learning rates, one seed. One task is 3 runs; VTAB-1k's kitti (1,000 trainval
# and 711 test images) takes about a minute on 2 cores, its largest test splits (dsprites,
# 73,728) a few minutes more. It checks the real data path end to end (prepared cache, manifest,
# loader, selection, records); its numbers are the micro ViT's, comparable to nothing else.
_CHECK_MICRO = replace(
    _CHECK,
    id="check-micro-v1",
    backbone="pebench_vit_micro",
    image_size=32,
    batch_size=32,
    epochs=10,
    warmup_epochs=1,
    lr_grid=(1e-3, 1e-2),
    timeout_s=1800.0,
    description="micro ViT (embedded fractal weights), 32 px, 10 epochs (1 warmup), AdamW + "
    "cosine, batch 32, lr {1e-3, 1e-2} x wd 1e-4, seed 0",
    purpose="checking a prepared real image suite offline on a CPU (prepare with --image-size "
    "32; no hub weights): minutes per task; numbers comparable to nothing else",
)

# The AdaptFormer / VideoMAE video recipe family (protocol.md §6) on ONE GPU: SGD momentum 0.9,
# 90 epochs with 10 warmup, 8 frames at stride 4, 4 segments x 3 crops at test, no mixup.
# The published recipe uses batch 1024 over 64 GPUs (lr 0.4, wd 0); a single-GPU budget cannot
# match it, so its batch and lr grid are its own and its numbers are labelled by this id.
_VIDEO = Budget(
    id="video-v1",
    epochs=90,
    warmup_epochs=10,
    batch_size=16,
    optimizer="sgd",
    lr_grid=(1e-2, 5e-2, 1e-1),
    wd_grid=(0.0,),
    image_size=224,
    seeds=(0, 1, 2),
    search_seed=0,
    backbone="pebench_videomae_base_patch16_224",
    timeout_s=72 * 3600.0,
    description="VideoMAE ViT-B/16 (K400, local file), 8x224 px clips at stride 4, 90 epochs "
    "(10 warmup), SGD + cosine, batch 16, lr {0.01, 0.05, 0.1}, 4x3 test views, seeds 0-2",
    video=VideoProtocol(),
    skip_bad=True,
    purpose="paper numbers on SSv2 / HMDB51 (GPU, local VideoMAE checkpoint)",
)

BUDGETS: dict[str, Budget] = {
    b.id: b
    for b in [
        _DEMO,
        _SMOKE,
        _DEMO2,
        _DEMO3,
        _DEMO4,
        _DEMO_REF,
        _DEMO_REF2,
        _REAL,
        replace(_REAL, id="fgvc-v1"),
        replace(_REAL, id="fewshot-v1"),
        _REAL2,
        replace(_REAL2, id="fgvc-v2", purpose="paper numbers on FGVC (GPU)"),
        replace(_REAL2, id="fewshot-v2", purpose="paper numbers on the few-shot suite (GPU)"),
        _REAL3,
        replace(
            _REAL3,
            id="fgvc-v3",
            purpose="paper numbers on FGVC with a precision target (GPU; about 2.6x fgvc-v2)",
        ),
        replace(
            _REAL3,
            id="fewshot-v3",
            seeds=(0, 1, 2),
            description=_REAL3.description.replace("seeds 0-4", "seeds 0-2"),
            purpose="paper numbers on the few-shot suite with a precision target (GPU; 75 tasks "
            "average the seed noise: 3 seeds reach the target)",
        ),
        _CHECK,
        _CHECK_MICRO,
        replace(
            _SMOKE,
            id="vtab1k-smoke",
            seeds=(0,),
            description="CI smoke test of the VTAB path: tiny ViT, random init, 32 px, 2 epochs, "
            "64 per split",
            purpose="checking the VTAB-1k data path on a prepared 32 px cache, offline",
        ),
        _VIDEO,
        replace(
            _VIDEO,
            id="video-smoke",
            epochs=2,
            warmup_epochs=0,
            batch_size=4,
            lr_grid=(1e-2, 1e-1),
            seeds=(0,),
            image_size=32,
            backbone="pebench_video_test",
            timeout_s=600.0,
            description="CI smoke test of the video path: tiny video ViT, random init, 4x32 px "
            "clips, 2 epochs, 2x2 test views",
            weights="random",
            purpose="checking the video data path in seconds, offline",
            video=VideoProtocol(
                num_frames=4,
                sampling_rate=2,
                short_side=36,
                crop_size=32,
                test_segments=2,
                test_crops=2,
            ),
        ),
    ]
}


# Built-in budgets obey the rules budget files obey (bounds, choices, grid sizes, warmup <=
# epochs): a bad edit fails at import, naming the budget and the key.
for _budget in BUDGETS.values():
    check_values(_budget)


def get_budget(budget_id: str) -> Budget:
    """A budget by id, or read from a budget file (``.toml``/``.json``) given by its path.

    ``file:<name>@<hash>`` ids (what rows of a budget file record) resolve to the budget read
    earlier, in this process or in the process that planned the run.

    Raises:
        RegistryError: an unknown id (with suggestions).
        BudgetError: a budget file that is missing or malformed (one line naming the key).
    """
    if budget_id in BUDGETS:
        return BUDGETS[budget_id]
    if budget_id.startswith(FILE_PREFIX):
        return _stored_budget(budget_id)
    if _looks_like_path(budget_id):
        return load_budget_file(budget_id)
    raise RegistryError(
        suggest(budget_id, BUDGETS, "budget") + "; or a budget file PATH ending in .toml or .json"
    )


__all__ = ["BUDGETS", "Budget", "BudgetError", "VideoProtocol", "get_budget"]
