"""PAdapter: a ReLU bottleneck whose code is concatenated with a token-indexed learned prompt.

*PAdapter: Adapter combined with prompt for image and video classification* (Li, Ye, Wen, Xu,
Wang, Liu — Image and Vision Computing 2025) https://doi.org/10.1016/j.imavis.2024.105395 —
code: https://github.com/owlholy/PAdapter

Per token t (official defaults ``cat_mode="x_p"``, ``learn_mode="add"``)::

    d_t = W_down x_t + b_down                      (r)
    h_t = [d_t ; P_t + d_t]                        (2r; P ∈ R^{L×r}, one row per token position)
    x_t ← x_t + s · (W_up ReLU(h_t) + b_up)        (W_up: 2r → D; s learnable scalar)

Where it sits in a timm ``Block``::

    placement="p_a_m" (image default, slot ``pre``):   x ─ PA ─ norm1 ─ attn ─ … ─ mlp ─▶
    placement="a_m_p" (video default, slot ``post``):  x ─ norm1 ─ attn ─ … ─ mlp ─ PA ─▶

Init: ``W_down`` kaiming-uniform(a=√5), biases 0, ``W_up = 0``; ``P`` xavier-uniform on shape
(1, L, r); ``s = 1`` → identity at init. ``L`` is the backbone's sequence length when attached
(``dims.num_tokens`` = patches + prefix tokens): 197 on ViT-B/16 at 224 px, 784 on VideoMAE.

Count: depth·(D·r + r + 2r·D + D + 1 + L·r); ViT-B/16 (r=32, L=197): 12·(2304r + r + 769 + L·r)
= 969,996 (L=784: 1,195,404). Not mergeable (ReLU; ``P`` acts as a position-specific bias).

Deliberate deviations from the official code:

* plain Linear head instead of ``BatchNorm1d(affine=False)`` + Linear (shared pebench rule);
* a sequence whose length differs from ``L`` raises a ``ValueError`` naming both lengths, instead
  of failing inside ``expand`` (other resolutions, tubelet sizes or extra tokens need a new attach);
* only the default modes are implemented (``x_p``/``add``; placements ``p_a_m`` and ``a_m_p``);
* not copied: ``main_video.py``'s ``--fulltune`` that is always on, and ``ft.sh``'s
  ``--padapt_on 0`` (PAdapter disabled). The scalar is learnable and starts at 1.0 as in the code
  (``--padapt_scalar "0."`` means "learnable, init 1").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from typing_extensions import override

from pebench.layers import lora_init_
from pebench.method import Caps, Method, at_least_one
from pebench.vit import Dims, PetlModule, blocks, set_slot, vit_dims

#: placement -> block slot (the module returns ``x + PA(x)``, so it replaces the stream there)
PLACEMENT_SLOTS = {"p_a_m": "pre", "a_m_p": "post"}


class PromptAdapter(PetlModule):
    """``x + s · (W_up ReLU([d ; P + d]) + b_up)`` with ``d = W_down x + b_down``.

    Args:
        dim: embedding width D.
        rank: bottleneck width r (the hidden code is 2r wide).
        num_tokens: sequence length L the prompt is indexed by.
    """

    def __init__(self, dim: int, rank: int, num_tokens: int):
        super().__init__()
        self.num_tokens = num_tokens
        self.down = nn.Linear(dim, rank)
        self.up = nn.Linear(2 * rank, dim)
        lora_init_(self.down, self.up)
        prompt = torch.empty(1, num_tokens, rank)
        nn.init.xavier_uniform_(prompt)  # fans on (1, L, r): bound sqrt(6 / (L·r + r))
        self.prompt = nn.Parameter(prompt)
        self.scale = nn.Parameter(torch.ones(1))

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] != self.num_tokens:
            raise ValueError(
                f"PAdapter prompt has L={self.num_tokens} token positions (the sequence length "
                f"when it was attached) but received a sequence of length {x.shape[-2]}; "
                f"re-attach the method to a backbone with the input resolution/token layout used"
            )
        d = self.down(x)
        h = torch.cat([d, self.prompt + d], dim=-1)
        return x + self.scale * self.up(torch.relu(h))

    @override
    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}"


class PAdapter(Method):
    """PAdapter (``x_p``/``add``) before (``p_a_m``) or after (``a_m_p``) every block."""

    name = "padapter"
    title = "PAdapter: Adapter combined with prompt for image and video classification"
    paper_url = "https://doi.org/10.1016/j.imavis.2024.105395"
    code_url = "https://github.com/owlholy/PAdapter"
    caps = Caps(identity_at_init=True, mergeable=False)
    presets = {"video": {"placement": "a_m_p"}}

    @dataclass(frozen=True)
    class Config(Method.Config):
        """PAdapter options.

        Attributes:
            r: bottleneck width (``--padapt_bottleneck``).
            placement: ``"p_a_m"`` before the block (image default) or ``"a_m_p"`` after it
                (video default).
        """

        r: int = at_least_one(32)
        placement: Literal["p_a_m", "a_m_p"] = "p_a_m"

    @override
    def attach(self, model: nn.Module) -> nn.Module:
        c = self.config
        num_tokens = vit_dims(model).num_tokens  # raises NotAViTError on a non-ViT
        slot = PLACEMENT_SLOTS[c.placement]
        for _, blk in blocks(model):
            dim = blk.mlp.fc1.in_features
            set_slot(blk, slot, PromptAdapter(dim, c.r, num_tokens))
        return model

    @override
    def expected_num_params(self, dims: Dims) -> int:
        d, r, n = dims.embed_dim, self.config.r, dims.num_tokens
        return dims.depth * (d * r + r + 2 * r * d + d + 1 + n * r)
