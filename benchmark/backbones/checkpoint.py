"""Reading checkpoint files safely: tensors only, never code (``torch.load(weights_only=True)``).

A ``.pth``/``.bin`` pickle is unpickled with torch's restricted unpickler, so a file whose pickle
would call a function (``os.system`` ...) is refused instead of executed; safetensors files hold
tensors only by construction.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pebench.errors import PebenchError


class CheckpointError(PebenchError, ValueError):
    """A checkpoint that is not in a VideoMAE layout pebench can convert (names the keys)."""


#: top-level keys under which VideoMAE/AdaptFormer checkpoints store the weights
_WRAPPERS = ("model", "module")


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The flat tensor dict of a ``.pth``/``.bin`` (``model``/``module`` wrapper) or safetensors.

    ``.pth`` files are read with ``torch.load(weights_only=True)`` (``argparse.Namespace`` allowed,
    as VideoMAE's training scripts store their ``args`` next to the weights).

    Raises:
        CheckpointError: unreadable file, or a file that holds no flat tensor dict (names the key).
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: Any = load_file(str(path))
        else:
            with torch.serialization.safe_globals([argparse.Namespace]):
                raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip/safetensors errors come in many types
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(err).__name__}: {err}"
        ) from err
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(raw).__name__}, not a state dict")
    for key in _WRAPPERS:
        if isinstance(raw.get(key), Mapping):
            raw = raw[key]
            break
    bad = [k for k, v in raw.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"checkpoint {path} is not a flat state dict: {names(bad)} are not tensors "
            f"(weights are looked for under the top-level keys {', '.join(_WRAPPERS)})"
        )
    return dict(raw)


def names(keys: list[str], limit: int = 8) -> str:
    """Up to ``limit`` sorted keys, comma-separated, and how many more there are."""
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


__all__ = ["CheckpointError", "names", "read_checkpoint"]
