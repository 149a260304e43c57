"""The conformance suite every registered method must pass (CPU, tiny timm ViTs).

Each check is a plain function ``check(method_cls) -> None`` that raises ``AssertionError`` with
a reason. ``tests/test_conformance.py`` parametrizes them by the registry (so a method is tested the
moment it registers, entry-point ones included); ``pebench check NAME`` runs them for one method.
Every check runs on three tiny backbones (:data:`KINDS`): a cls-token ViT, an average-pooling ViT
without cls token, and a video ViT in the VideoMAE layout.

This is the suite's public face. Its code lives in :mod:`pebench.exercise`, under a name that
says what it does to a method rather than that it checks one: ``pebench run`` runs the same code
in a fresh process on the sweep's config, batch sizes and random draws
(:mod:`pebench.sweep.gate`), and that process never imports this module, so a plugin cannot
behave differently because it sees ``pebench.conformance`` (see :mod:`pebench.exercise` for what
the gate's process can and cannot hide).
"""

from __future__ import annotations

from pebench.exercise import (
    CHECKS,
    INDEPENDENCE_BATCH,
    KINDS,
    NUM_CLASSES,
    CheckResult,
    Setting,
    exercise,
    images,
    inputs,
    perturb_trainable,
    plain_backbone,
    prepared,
)
from pebench.method import Method


def run_checks(
    method: type[Method] | str, only: list[str] | None = None, setting: Setting | None = None
) -> list[CheckResult]:
    """Run the suite for a method class or registered name; never raises for a failing check.

    Args:
        method: the class, or a registered name.
        only: the checks to run (default: all of :data:`CHECKS`).
        setting: the method config, evaluation batch and seed to exercise it with (default: the
            default config, a batch of 32, fixed draws). A failure of the ``pebench run`` gate
            names its seed: ``Setting(preset, overrides, eval_batch, seed)`` reproduces it.
    """
    return exercise(method, only, setting)


__all__ = [
    "CHECKS",
    "INDEPENDENCE_BATCH",
    "KINDS",
    "NUM_CLASSES",
    "CheckResult",
    "Setting",
    "images",
    "inputs",
    "perturb_trainable",
    "plain_backbone",
    "prepared",
    "run_checks",
]
