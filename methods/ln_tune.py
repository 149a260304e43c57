"""LN-tune: train the γ and β of every LayerNorm of the backbone.

A baseline without a paper of its own; pebench follows the LayerNorm-tuning baseline of
*Lessons Learned from a Unifying Empirical Study of Parameter-Efficient Transfer Learning (PETL) in
Visual Recognition* (Mai et al., arXiv 2409.16434) — code: https://github.com/OSU-MLB/PETL_Vision
(whose reported count this reproduces).

    blocks: norm1.γ norm1.β ─ attn ─ norm2.γ norm2.β ─ mlp ─ … ─ norm.γ norm.β (or fc_norm.γ/β)

Selected structurally: ``weight`` and ``bias`` of every ``nn.LayerNorm`` outside the head (timm's
``LayerNorm`` subclasses it). Count: D·(4·depth + 2) (ViT-B/16: 12·4·768 + 2·768 = 38,400).
Identity at init (nothing is added). Mergeable trivially: the trained tensors are the backbone's
own, so :meth:`LNTune.merge` returns the model unchanged.

Deviations: none. Note that backbones with more LayerNorms than ``norm1``/``norm2``/final norm
(a CLIP-style ``norm_pre``, a ``patch_embed.norm``, ``qk_norm``) train those as well, so their count
exceeds the closed form by those norms' parameters.
"""

from __future__ import annotations

from torch import nn
from typing_extensions import override

from pebench.method import Caps, Method
from pebench.vit import Dims, check_vit


class LNTune(Method):
    """All LayerNorm scales and shifts of the backbone (everything else stays frozen)."""

    name = "ln_tune"
    title = "LayerNorm tuning (γ and β of every LayerNorm)"
    paper_url = "https://arxiv.org/abs/2409.16434"
    code_url = "https://github.com/OSU-MLB/PETL_Vision"
    caps = Caps(identity_at_init=True, mergeable=True, unfreezes_backbone=True)

    @override
    def attach(self, model: nn.Module) -> nn.Module:
        return check_vit(model)

    @override
    def trainable(self, model: nn.Module) -> set[str]:
        head = model.get_classifier()
        in_head = {id(m) for m in head.modules()}
        names = set()
        for mname, mod in model.named_modules():
            if id(mod) in in_head or not isinstance(mod, nn.LayerNorm):
                continue
            names.update(f"{mname}.{p}" for p, _ in mod.named_parameters(recurse=False))
        return names

    @override
    def expected_num_params(self, dims: Dims) -> int:
        return dims.embed_dim * (4 * dims.depth + 2)  # norm1, norm2 (γ, β) + final norm (γ, β)

    def merge(self, model: nn.Module) -> nn.Module:
        """Nothing to fold: LN-tune trains the backbone's own tensors in place."""
        return check_vit(model)
