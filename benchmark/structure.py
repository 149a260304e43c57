"""What a prepared model may not contain: ways to compute or learn outside the counted tensors.

Forward and backward hooks (on any module, or registered globally), parametrizations
(``torch.nn.utils.parametrize``) and tensors that require grad but are neither parameters nor
buffers (a plain attribute, or one in a list, tuple or dict attribute) let a method change what
the model computes, or train state no count sees, without declaring it. None of the built-in
methods needs any of them. :func:`pebench.method.prepare` refuses a model that has one, and the
:class:`pebench.method.Guard` looks again after training.

These checks run in the plugin's own process, so a plugin determined to cheat can defeat them;
what protects the numbers is the structure (:mod:`pebench.supervise`): the prediction stage
evaluates only the declared tunable state, in a fresh process. The checks make the common
mistakes fail early and by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _module
from torch.nn.utils import parametrize

_HOOKS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
)
_GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """Tensors held by an attribute value, one container level deep."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        yield from (v for v in value if isinstance(v, torch.Tensor))
    elif isinstance(value, dict):
        yield from (v for v in value.values() if isinstance(v, torch.Tensor))


def problems(model: nn.Module) -> list[str]:
    """What ``model`` holds of the above, one phrase per kind (empty: nothing)."""
    hooks, params, grads = [], [], []
    if any(getattr(_module, name, None) for name in _GLOBAL_HOOKS):
        hooks.append("<global>")
    for name, mod in model.named_modules():
        where = name or "<model>"
        if any(getattr(mod, h, None) for h in _HOOKS):
            hooks.append(where)
        if parametrize.is_parametrized(mod):
            params.append(where)
        for attr, value in vars(mod).items():
            if attr in ("_parameters", "_buffers", "_modules"):
                continue
            if any(t.requires_grad and not isinstance(t, nn.Parameter) for t in _tensors(value)):
                grads.append(f"{where}.{attr}")
    out = []
    if hooks:
        out.append(f"hooks on {hooks[:4]}")
    if params:
        out.append(f"parametrizations on {params[:4]}")
    if grads:
        out.append(f"tensors that require grad outside parameters and buffers: {grads[:4]}")
    return out


__all__ = ["problems"]
