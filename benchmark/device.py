"""The device a run or a measurement uses, and the process settings they all share.

Every entry point that trains or times a model (``pebench run``'s runs, ``pebench bench``,
``bench --harness``, ``estimate --measure``) gets its device from :func:`setup`, so their
figures describe the same computation, and a CUDA device always carries its index:
``torch.device("cuda:0") == torch.device("cuda")`` is ``False``, so an index-less device made
a split copied to the GPU look absent and every batch was streamed from the host anyway.
"""

from __future__ import annotations

import torch


def canonical(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device` with its index (``cuda`` → ``cuda:<current>``).

    ``auto`` is the current CUDA device when there is one, else the CPU.
    """
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def same(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are the same one (an index-less CUDA device is the current one)."""
    return a.type == b.type and (a.type != "cuda" or canonical(a) == canonical(b))


def setup(device: str | torch.device = "auto", threads: int | None = None) -> torch.device:
    """The canonical device (see :func:`canonical`), with the process-wide torch settings.

    One function for runs and for every speed measurement, so a measured figure describes what
    runs do. ``threads`` sets torch's thread count (``None``: unchanged).

    * Every device: subnormal floats are flushed to zero on the CPU. A run at a high lr drives
      activations and gradients into the subnormal range, where x86 arithmetic is ~100x slower:
      on the demo the lr 0.1 and 0.3 trials took 13-19 s instead of 9 s. Like the thread count
      it changes round-off only: rerunning the demo-v2 LoRA sweep with it gave 39 of 40 rows
      identical to the last digit, one lr 0.3 trial moved (val 0.1625 -> 0.175), no selection
      or final moved. GPUs flush in their fast paths already.
    * CPU: deterministic algorithms (warn only), as every committed CPU row was computed; a
      rerun on the same machine and thread count is bit-identical.
    * CUDA: no deterministic mode, TF32 matmuls. Deterministic mode there filled every
      uninitialised allocation with NaN, warned on every cuBLAS call without
      ``CUBLAS_WORKSPACE_CONFIG``, and still left flash-attention's backward nondeterministic.
      GPU reruns therefore differ at round-off (the batches are the same, the training is not
      bit-identical).
    """
    dev = canonical(device)
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    if dev.type == "cuda":
        torch.use_deterministic_algorithms(False)
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return dev


__all__ = ["canonical", "same", "setup"]
