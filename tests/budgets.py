"""Budget files for tests: a small budget's fields as TOML, any of them overridden."""

from __future__ import annotations

import json
from typing import Any

#: the micro ViT on 32 px images, one epoch, one trial, one seed, 64 examples per split
SMALL: dict[str, Any] = {
    "epochs": 1,
    "warmup_epochs": 0,
    "batch_size": 32,
    "optimizer": "adamw",
    "lr_grid": [1e-3],
    "wd_grid": [1e-4],
    "image_size": 32,
    "seeds": [0],
    "search_seed": 0,
    "backbone": "pebench_vit_micro",
    "subset": 64,
    "description": "test budget",
}


def budget_toml(**fields: Any) -> str:
    """The TOML text of :data:`SMALL` with ``fields`` changed (``None`` removes a field)."""
    merged = {**SMALL, **fields}
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in merged.items() if v is not None)
