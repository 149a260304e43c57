"""Import-time compatibility fixes, applied once, in one place.

PyPI's ``torchvision`` wheels are CUDA builds. Next to a CPU-only ``torch`` their compiled
extension fails to load, and ``import torchvision`` then dies in its meta registrations with
``RuntimeError: operator torchvision::nms does not exist``. timm imports torchvision, so timm
(and pebench) would be unusable. :func:`ensure_torchvision` detects exactly that failure, declares
the two operator schemas torchvision's pure-Python part needs (``nms`` and ``qnms``) with kernels
that raise a clear error if ever called, and imports torchvision again. Where torchvision imports
cleanly it does nothing. pebench never calls torchvision's compiled ops (detection only).
"""

from __future__ import annotations

import sys

_STATE: dict[str, str] = {}
_LIB = None  # keeps the torch.library.Library alive for the process lifetime

_MISSING_OP = "operator torchvision::nms does not exist"
_OPS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def _unavailable(*_args: object, **_kwargs: object) -> None:
    raise RuntimeError(
        "torchvision's compiled operators are unavailable: the installed torchvision wheel does "
        "not match this torch build (pebench shimmed it so that timm imports). Install a "
        "torchvision built for your torch to use detection ops."
    )


def ensure_torchvision() -> str:
    """Make ``import torchvision`` (and therefore ``import timm``) work.

    Returns:
        ``"ok"`` if torchvision imported unchanged, ``"shimmed"`` if the missing-operator
        failure was repaired, ``"absent"`` if torchvision is not installed.

    Raises:
        RuntimeError: any torchvision import failure other than the known missing operator.
    """
    if "mode" in _STATE:
        return _STATE["mode"]
    try:
        import torchvision

        _STATE["mode"] = "ok"
    except ModuleNotFoundError:
        _STATE["mode"] = "absent"
    except RuntimeError as err:
        if _MISSING_OP not in str(err):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _declare_ops()
        import torchvision  # noqa: F401

        _STATE["mode"] = "shimmed"
    return _STATE["mode"]


def _declare_ops() -> None:
    global _LIB
    import torch

    _LIB = torch.library.Library("torchvision", "DEF")  # noqa: TOR901
    for name, schema in _OPS.items():
        _LIB.define(schema)
        _LIB.impl(name, _unavailable, "CompositeExplicitAutograd")


def import_timm():
    """Return the ``timm`` module after :func:`ensure_torchvision`."""
    ensure_torchvision()
    import timm

    return timm
