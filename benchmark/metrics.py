"""Measured (never estimated) run metrics and provenance."""

from __future__ import annotations

import datetime as dt
import platform
import resource
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

import pebench
from pebench.backbones.videomae import example_input
from pebench.method import tunable_state_dict


class _OneBucket:
    """Stands in for FlopCounterMode's module tracker: totals only, no module hooks.

    The tracker's hooks assert when a Parameter feeds a module directly during autograd (VPT's
    prompts into a Dropout); a total needs no per-module attribution.
    """

    parents = frozenset({"Global"})

    def __enter__(self) -> _OneBucket:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@contextmanager
def count_flops() -> Iterator[FlopCounterMode]:
    """Count matmul/conv FLOPs of what runs inside (``.get_total_flops()`` afterwards).

    Attention runs on PyTorch's math backend while counting, so its two matmuls are counted on
    every device: the fused CPU kernel has no FLOP formula and would silently count zero, which
    made CPU and GPU figures differ. Numbers of the counted computation are unchanged.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _OneBucket()
    with sdpa_kernel(SDPBackend.MATH), counter:
        yield counter


def step_flops(model: nn.Module, image_size: int) -> tuple[float, float]:
    """``(eval forward, training step)`` FLOPs per input of a prepared model.

    One input is an image ``(C, H, W)`` or one clip ``(C, T, H, W)`` on a video backbone (one
    view), shaped by :func:`pebench.backbones.videomae.example_input` with
    ``H = W = image_size``. The
    training step is forward + backward of a cross-entropy loss, so it costs what the method
    really costs: no backward through the backbone for a linear probe, input gradients only
    through a frozen backbone, input and weight gradients for full fine-tuning. Works on any
    device, including ``meta`` (counting without memory or weights).
    """
    device = next(model.parameters()).device
    x = example_input(model, 2, image_size=image_size).to(device)
    y = torch.zeros(2, dtype=torch.long, device=device)
    was_training = model.training
    try:
        model.train()
        with count_flops() as train:
            F.cross_entropy(model(x), y).backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return flops_per_image(model, image_size, device), train.get_total_flops() / 2


@torch.no_grad()
def flops_per_image(model: nn.Module, image_size: int, device: torch.device) -> float:
    """Forward FLOPs of one input in eval mode (see :func:`count_flops`).

    One input is an image ``(C, H, W)``, or one clip ``(C, T, H, W)`` on a video backbone (FLOPs
    per clip, one view); the shape comes from :func:`pebench.backbones.videomae.example_input`, with
    ``H = W = image_size``.
    """
    was_training = model.training
    model.eval()
    try:
        x = example_input(model, 2, image_size=image_size).to(device)
        with count_flops() as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2


def reset_peak_memory(device: torch.device) -> None:
    """Start a fresh CUDA peak (CPU peak RSS is per process: one run = one process)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> tuple[float, str]:
    """``(bytes, kind)``: CUDA peak allocated on GPU, peak RSS of this process on CPU."""
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device)), "cuda_allocated"
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024), "cpu_rss"


def checkpoint_bytes(model: nn.Module) -> int:
    """Size of the tunable-only checkpoint (method tensors + head) as safetensors."""
    from safetensors.torch import save

    return len(save({k: v.contiguous() for k, v in tunable_state_dict(model).items()}))


def _git(*args: str) -> str | None:
    root = Path(pebench.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def device_name(device: torch.device) -> str:
    """Human-readable device, e.g. ``"cuda:NVIDIA H200"`` or ``"cpu:x86_64x2threads"``."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.machine()}x{torch.get_num_threads()}threads"


def provenance(device: torch.device) -> dict[str, object]:
    """created_at, versions, git state and device for a result row."""
    import timm

    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "pebench_version": pebench.__version__,
        "git_sha": sha or "unknown",
        "git_dirty": bool(status) if status is not None else False,
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "device": device_name(device),
    }
