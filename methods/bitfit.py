"""BitFit: train every bias of the backbone.

*BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked Language-models*
(Ben Zaken, Ravfogel, Goldberg, ACL 2022) — https://arxiv.org/abs/2106.10199

    patch_embed.proj.b ─ blocks: norm1.β qkv.b proj.b norm2.β fc1.b fc2.b ─ norm.β (or fc_norm.β)

Selected structurally: the ``bias`` of every Linear, Conv2d/Conv3d and LayerNorm outside the head
(video backbones embed tubelets with a Conv3d, whose bias is the patch-embedding bias).
Count on ViT-B/16: 12·(2304+768+3072+768+768+768) + 768 + 768 = 102,912. Nothing to merge.
"""

from __future__ import annotations

from torch import nn
from typing_extensions import override

from pebench.method import Caps, Method
from pebench.vit import Dims, check_vit

_WITH_BIAS = (nn.Linear, nn.Conv2d, nn.Conv3d, nn.LayerNorm)


class BitFit(Method):
    """All biases (weights and LayerNorm γ stay frozen)."""

    name = "bitfit"
    title = "BitFit: Simple Parameter-efficient Fine-tuning (bias terms only)"
    paper_url = "https://arxiv.org/abs/2106.10199"
    caps = Caps(identity_at_init=True, mergeable=False, unfreezes_backbone=True)

    @override
    def attach(self, model: nn.Module) -> nn.Module:
        return check_vit(model)

    @override
    def trainable(self, model: nn.Module) -> set[str]:
        head = model.get_classifier()
        names = set()
        for mname, mod in model.named_modules():
            if mod is head or not isinstance(mod, _WITH_BIAS) or mod.bias is None:
                continue
            names.add(f"{mname}.bias")
        return names

    @override
    def expected_num_params(self, dims: Dims) -> int:
        d, h = dims.embed_dim, dims.mlp_hidden
        per_block = 3 * d + d + h + d + 2 * d  # qkv, proj, fc1, fc2, norm1, norm2
        return dims.depth * per_block + d + d  # patch_embed bias, final norm (or fc_norm) bias
