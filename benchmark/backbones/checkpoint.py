"""Reading checkpoint files safely: tensors only, never code (``torch.load(weights_only=True)``).

A ``.pth``/``.bin`` pickle is unpickled with torch's restricted unpickler, so a file whose pickle
would call a function (``os.system`` ...) is refused instead of executed; safetensors files hold
tensors only by construction.
"""

from __future__ import annotations

import argparse
import pickle
import warnings
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
            with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": noise here
                raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip/safetensors errors come in many types
        raise CheckpointError(f"cannot read checkpoint {path}: {_reason(err)}") from err
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


#: the lines of torch's weights-only refusal that say nothing about the file
_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _reason(err: Exception) -> str:
    """Why a checkpoint could not be read, in one line (torch's pickle refusal spans seven).

    A refused pickle is named by its one telling line (``Trying to load unsupported GLOBAL
    posix.system ...``); any other error by its type and first line.
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if isinstance(err, pickle.UnpicklingError):
        telling = [line for line in lines if not line.startswith(_BOILERPLATE)]
        detail = f" ({telling[0].rstrip('.')})" if telling else ""
        return (
            f"it is not a plain state dict of tensors{detail}; pebench reads weights only "
            "and never runs a pickle's code (save the state dict, or use safetensors)"
        )
    return f"{type(err).__name__}: {lines[0] if lines else 'no detail'}"


def names(keys: list[str], limit: int = 8) -> str:
    """Up to ``limit`` sorted keys, comma-separated, and how many more there are."""
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


__all__ = ["CheckpointError", "names", "read_checkpoint"]
