"""Full fine-tuning: every backbone parameter trains (plus the head).

    [patch_embed, cls/pos, blocks x L, norm] ──▶ [head]   all trainable

Needs its own lower learning rates in practice; pebench still gives it the same budget as every
other method (see the budget table), which is the point of a fixed budget.

Video backbones (:mod:`pebench.backbones.videomae`): the patch embedding is a Conv3d over tubelets
(``D · C·t·p² + D``) and the position table is a fixed buffer, not a parameter, so it is not
counted (ViT-B video, 8 frames: 86,236,416). The fused ``qkv.bias`` keeps its k slot, which VideoMAE
does not have; it is trainable here, but its value never changes any output (a k bias shifts every
logit of a query row equally, which the softmax cancels).
"""

from __future__ import annotations

from torch import nn
from typing_extensions import override

from pebench.method import Caps, Method
from pebench.vit import Dims, check_vit


class Full(Method):
    """All backbone parameters. Count = the backbone's size (85,798,656 on ViT-B/16)."""

    name = "full"
    title = "Full fine-tuning"
    caps = Caps(identity_at_init=True, mergeable=False, unfreezes_backbone=True)

    @override
    def attach(self, model: nn.Module) -> nn.Module:
        return check_vit(model)

    @override
    def trainable(self, model: nn.Module) -> set[str]:
        head = model.get_classifier()
        head_ids = {id(p) for p in head.parameters()}
        return {n for n, p in model.named_parameters() if id(p) not in head_ids}

    @override
    def expected_num_params(self, dims: Dims) -> int:
        d, h = dims.embed_dim, dims.mlp_hidden
        patch = d * dims.patch_volume + d  # Conv2d, or Conv3d over tubelets for video
        pos = dims.num_tokens * d if dims.learned_pos_embed else 0  # video: fixed table, no param
        tokens = (d if dims.has_cls_token else 0) + pos
        block = (d * 3 * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d) + 4 * d
        return patch + tokens + dims.depth * block + 2 * d
