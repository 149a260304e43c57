"""Measured (never estimated) run metrics and provenance."""

from __future__ import annotations

import datetime as dt
import platform
import re
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
    device, including ``meta`` (counting without memory or weights). The model runs in eval mode
    (dropout off: it has no FLOPs to count), so counting draws nothing from the random generator
    and a run that counts before it trains trains exactly as one that does not.
    """
    device = next(model.parameters()).device
    x = example_input(model, 2, image_size=image_size).to(device)
    y = torch.zeros(2, dtype=torch.long, device=device)
    was_training = model.training
    try:
        model.eval()
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


#: dense bf16 tensor-core peak FLOP/s of known devices (vendor data sheets, SXM parts unless
#: named): the denominator of a row's ``mfu``. A device not listed gets no MFU. A key matches
#: whole words of the device name (``L4`` is not ``NVIDIA L40``).
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H200 NVL", 835e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
)


def peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a device named like :func:`device_name` (``None``: unknown)."""
    if not device_name.startswith("cuda:"):
        return None
    words = " " + " ".join(re.split(r"[\s_-]+", device_name.removeprefix("cuda:"))) + " "
    for key, flops in PEAK_BF16_FLOPS:  # longest names first where one contains another
        if f" {key} " in words:
            return flops
    return None


def mfu(
    train_flops_per_image: float, images_per_s: float, device_name: str, devices: int = 1
) -> float:
    """Model FLOP utilisation: achieved training FLOP/s over the devices' bf16 peak (NaN: unknown).

    ``train_flops_per_image`` is the counted forward + backward of the run's model
    (:func:`step_flops`), so a frozen backbone is not credited with weight gradients it skips;
    FLOPs are counted matmuls and convolutions, 2 per multiply-add (torch's flop counter).
    ``images_per_s`` is the run's global rate; under DDP it is shared by ``devices`` GPUs of
    ``device_name``, so the peak is theirs together.
    """
    peak = peak_flops(device_name)
    if not peak or not images_per_s:
        return float("nan")
    return train_flops_per_image * images_per_s / (peak * devices)


def _proc_status(key: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes (``None`` where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class MemoryMeter:
    """What a run's training state costs in memory, measured from after the model is loaded.

    On CUDA: the peak of allocated device memory (``torch.cuda.max_memory_allocated``), kind
    ``cuda_allocated``. On the CPU: the process's peak resident set since :meth:`start` minus the
    resident set at :meth:`start` (after backbone and data are loaded), kind ``cpu_state``:
    activations, gradients, optimizer state, the method's tensors, not Python and torch. The
    peak is reset through ``/proc/self/clear_refs``; where that is not possible the whole
    process's peak RSS is recorded, kind ``cpu_rss``.
    """

    def __init__(self, device: torch.device) -> None:
        self.device, self.base = device, None

    def start(self) -> None:
        """Start measuring here (reset the peak)."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS (VmHWM)
        except OSError:
            return
        self.base = _proc_status("VmRSS")

    def peak(self) -> tuple[float, str]:
        """``(bytes, kind)`` since :meth:`start`."""
        if self.device.type == "cuda":
            return float(torch.cuda.max_memory_allocated(self.device)), "cuda_allocated"
        hwm = _proc_status("VmHWM")
        if self.base is None or hwm is None:
            return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024), "cpu_rss"
        return max(0.0, hwm - self.base), "cpu_state"


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
    """Human-readable device, e.g. ``"cuda:NVIDIA H200"`` or ``"cpu:x86_64/AVX512x2threads"``.

    On the CPU it names the vector instruction set torch's kernels use: CPU runs are
    bit-identical between machines of the same kind, not across kinds (the demo's committed rows,
    made on another machine with the same software, differed here at float32 round-off and,
    chaotically, at high learning rates), so a row says which kind produced it.
    """
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    isa = torch.backends.cpu.get_cpu_capability()
    return f"cpu:{platform.machine()}/{isa}x{torch.get_num_threads()}threads"


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
