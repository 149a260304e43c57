"""How every pebench figure is made and encoded: print sizes, formats, deterministic bytes.

Figures are drawn on matplotlib's Agg canvas (pyplot is never imported) and encoded as PNG at
:data:`PNG_DPI` dpi and as vector PDF, without software or date metadata, so the same rows give
the same bytes. Torch-free.
"""

from __future__ import annotations

import io
from typing import Any

PNG_DPI = 300
#: the file formats of every figure
FORMATS = ("png", "pdf")
_METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
}


def new_figure(size: tuple[float, float]) -> Any:
    """A matplotlib Figure of ``size`` inches on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=PNG_DPI)
    FigureCanvasAgg(fig)
    return fig


def encode(fig: Any, fmt: str) -> bytes:
    """``fig`` as ``fmt`` (``png`` or ``pdf``) bytes, without software or date metadata."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=PNG_DPI, metadata=_METADATA[fmt])
    return buf.getvalue()


__all__ = ["FORMATS", "PNG_DPI", "encode", "new_figure"]
