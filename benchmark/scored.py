"""The split a run is scored on, and what a process that must not see its labels gets of it.

Built where no plugin runs (the run's supervisor, :mod:`pebench.supervise`), from a backbone made
on the ``meta`` device: no weights are read, and the normalisation statistics and the head's
shapes are those of the backbone's configuration.
"""

from __future__ import annotations

from typing import Any

import torch

from pebench.data import Split, blind, run_split
from pebench.run import RunSpec


def head_shapes(spec: RunSpec, budget: Any, num_classes: int) -> tuple[Any, dict[str, tuple]]:
    """``(backbone on the meta device, {head tensor name: shape})``: no weights, no plugin."""
    from pebench.backbones import create_backbone
    from pebench.method import head_names

    frames = {"num_frames": budget.video.num_frames} if budget.video else {}
    with torch.device("meta"):
        bb = create_backbone(spec.backbone, "random", image_size=budget.image_size, **frames)
        bb.model.reset_classifier(num_classes)
    params = dict(bb.model.named_parameters())
    return bb, {n: tuple(params[n].shape) for n in head_names(bb.model)}


def blind_eval_split(spec: RunSpec) -> tuple[Split, Split, int, Any, dict[str, tuple]]:
    """The split ``spec`` is scored on, with labels and blind, and what describes it.

    Returns ``(split, blind copy, bad videos skipped, meta backbone, head shapes)``; the split
    is normalised with the backbone's statistics, taken from a backbone built without weights.
    """
    opts = spec.options
    budget, task = spec.resolved()
    meta, heads = head_shapes(spec, budget, task.num_classes)
    args = (task, spec.phase, budget, meta.mean, meta.std, opts.data_dir, spec.seed)
    ev, skipped = run_split(*args, train=False)
    return ev, blind(ev), skipped, meta, heads


__all__ = ["blind_eval_split", "head_shapes"]
