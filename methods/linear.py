"""Linear probing: train only the classification head.

The reference point of every PETL table ("0.04 M" on VTAB-1k is the mean head alone)::

    frozen ViT ──▶ pre-logits ──▶ [head]   (the head is created and trained by the core)
"""

from __future__ import annotations

from torch import nn
from typing_extensions import override

from pebench.method import Caps, Method
from pebench.vit import Dims, check_vit


class Linear(Method):
    """Head only; nothing is attached. Trainable (head excluded): 0."""

    name = "linear"
    title = "Linear probing (frozen backbone, trained head)"
    caps = Caps(identity_at_init=True, mergeable=False)

    @override
    def attach(self, model: nn.Module) -> nn.Module:
        return check_vit(model)

    @override
    def trainable(self, model: nn.Module) -> set[str]:
        return set()

    @override
    def expected_num_params(self, dims: Dims) -> int:
        return 0
