"""One run's pieces that need no training: the error a row keeps, the status it gets and the
process settings it trains under."""

import pytest
import torch

from pebench.run import ERROR_CHARS, RunOptions, classify, device_of, error_text


def _raise(exc):
    def deep(n):
        if n == 0:
            raise exc
        deep(n - 1)

    try:
        deep(50)
    except Exception as err:
        return error_text(err)


def test_the_error_keeps_type_and_message_first_and_the_traceback_end():
    text = _raise(ValueError("offset 7 is beyond the file length"))
    assert text.startswith("ValueError: offset 7 is beyond the file length\n")
    assert len(text) <= ERROR_CHARS and "raise exc" in text  # the raising frame survives
    # the old rule kept the last 2000 characters: the type and message were cut off
    huge = _raise(RuntimeError("x" * 5000))
    assert huge.startswith("RuntimeError: xxx") and huge.endswith("...")
    assert len(huge) == ERROR_CHARS


@pytest.mark.parametrize(
    ("err", "status"),
    [
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB"), "oom"),
        (MemoryError(), "oom"),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), "failed"),
    ],
)
def test_a_cpu_allocation_failure_is_oom(err, status):
    assert classify(err) == status


def test_a_cpu_run_flushes_subnormal_floats():
    """High-lr runs fill tensors with subnormals, ~100x slower on x86: a run flushes them to 0."""
    try:
        torch.set_flush_denormal(False)  # an earlier in-process run may have turned it on
        tiny = torch.tensor([1e-40], dtype=torch.float32)  # subnormal (min normal 1.2e-38)
        assert (tiny * 1.0).item() != 0.0  # arithmetic keeps it when nothing flushes
        assert device_of(RunOptions(device="cpu")).type == "cpu"
        assert (tiny * 1.0).item() == 0.0
    finally:
        torch.set_flush_denormal(False)
