"""Small building blocks shared by method plugins (no method copies another's code)."""

from __future__ import annotations

import math

import torch
from torch import nn
from typing_extensions import override

from pebench.vit import PetlModule

ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "quick_gelu": None,  # filled below
    "identity": nn.Identity,
}


class QuickGELU(nn.Module):
    """``x · sigmoid(1.702 x)``, the activation of CLIP and NOAH/Convpass adapters."""

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS["quick_gelu"] = QuickGELU


def make_act(name: str) -> nn.Module:
    """Activation by name; unknown names raise with the allowed ones."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


@torch.no_grad()
def lora_init_(down: nn.Linear, up: nn.Linear) -> None:
    """The "lora" init: down kaiming-uniform(a=√5), down bias 0, up weight and bias 0."""
    nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
    if down.bias is not None:
        nn.init.zeros_(down.bias)
    nn.init.zeros_(up.weight)
    if up.bias is not None:
        nn.init.zeros_(up.bias)


class Bottleneck(PetlModule):
    """``up(dropout(act(down(x))))`` with the "lora" init (zero output at init).

    Args:
        dim: input (and default output) width.
        rank: bottleneck width.
        act: activation name (see :data:`ACTIVATIONS`).
        dropout: dropout on the bottleneck activations.
        up_bias: whether the up-projection has a bias.
        out_dim: output width (default ``dim``).
    """

    def __init__(
        self,
        dim: int,
        rank: int,
        act: str = "relu",
        dropout: float = 0.0,
        up_bias: bool = True,
        out_dim: int | None = None,
    ):
        super().__init__()
        if rank < 1:
            raise ValueError(f"bottleneck rank must be >= 1, got {rank}")
        self.down = nn.Linear(dim, rank)
        self.act = make_act(act)
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(rank, out_dim or dim, bias=up_bias)
        lora_init_(self.down, self.up)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.dropout(self.act(self.down(x))))
