"""Point labels that do not collide: a deterministic greedy layout on a fixed axes.

Each label tries positions around its point, nearest first (8 directions per ring, rings
growing outwards), and takes the first whose box stays inside the axes and overlaps no label
placed before it; among those it prefers one that covers no marker or error bar. A label set
away from its point gets a thin leader line. The axes limits and position must be final before
:func:`place_labels` runs (boxes are computed in display space).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: the ``gid`` of every label text (tests find the labels by it)
LABEL_GID = "point-label"
#: ring radii around a point, in points (1/72 in)
RADII = (3.0, 6.0, 10.0, 15.0, 21.0, 28.0, 36.0, 45.0, 55.0, 66.0, 78.0, 91.0, 105.0, 120.0)
#: directions tried on each ring, in degrees (right first, then counter-clockwise)
ANGLES = (0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0, 22.5, 157.5, 202.5, 337.5)
#: a label farther than this from its point (in points) gets a leader line
LEADER_FROM = 9.0
#: gap kept between label boxes, in points
PAD = 1.0


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in display pixels."""

    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, other: Box) -> bool:
        """Whether the two boxes share interior area."""
        apart_x = self.x1 <= other.x0 or other.x1 <= self.x0
        return not apart_x and self.y0 < other.y1 and other.y0 < self.y1

    def inside(self, other: Box) -> bool:
        """Whether this box lies within ``other``."""
        within_x = other.x0 <= self.x0 and self.x1 <= other.x1
        return within_x and other.y0 <= self.y0 and self.y1 <= other.y1

    def grown(self, by: float) -> Box:
        """This box with ``by`` pixels added on every side."""
        return Box(self.x0 - by, self.y0 - by, self.x1 + by, self.y1 + by)


def _align(cos: float, sin: float) -> tuple[str, str]:
    """Text alignment that puts the text on the far side of its anchor from the point."""
    ha = "left" if cos > 0.3 else "right" if cos < -0.3 else "center"
    va = "bottom" if sin > 0.3 else "top" if sin < -0.3 else "center"
    return ha, va


def _box(x: float, y: float, w: float, h: float, ha: str, va: str) -> Box:
    x0 = {"left": x, "right": x - w, "center": x - w / 2}[ha]
    y0 = {"bottom": y, "top": y - h, "center": y - h / 2}[va]
    return Box(x0, y0, x0 + w, y0 + h)


def _candidates() -> list[tuple[float, float, str, str]]:
    """``(dx, dy, ha, va)`` offsets in points, nearest first."""
    out = []
    for r in RADII:
        for deg in ANGLES:
            cos, sin = math.cos(math.radians(deg)), math.sin(math.radians(deg))
            out.append((r * cos, r * sin, *_align(cos, sin)))
    return out


def place_labels(
    ax: Any,
    points: Sequence[tuple[str, float, float]],
    obstacles: Sequence[Box] = (),
    fontsize: float = 6.5,
) -> list[Any]:
    """Label each point without two labels overlapping (see the module docstring).

    Args:
        ax: a matplotlib Axes whose limits and position are final.
        points: ``(text, x, y)`` in data coordinates, in placing order (most important first).
        obstacles: boxes (display pixels) a label should avoid if it can: markers, error bars.
        fontsize: label size in points.

    Returns:
        The label Text artists (``gid`` :data:`LABEL_GID`), in the order of ``points``.

    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    px_per_pt = fig.dpi / 72.0
    frame = Box(*ax.get_window_extent(renderer).extents).grown(-2 * px_per_pt)
    placed: list[Box] = []
    texts = []
    candidates = _candidates()
    for name, x, y in points:
        text = ax.text(x, y, name, fontsize=fontsize, gid=LABEL_GID, zorder=5)
        ext = text.get_window_extent(renderer)
        w, h = ext.width, ext.height
        px, py = ax.transData.transform((x, y))
        best: tuple[int, tuple[float, float, str, str], Box] | None = None
        for dx, dy, ha, va in candidates:
            box = _box(px + dx * px_per_pt, py + dy * px_per_pt, w, h, ha, va)
            if not box.inside(frame):
                continue
            if any(box.grown(PAD * px_per_pt).overlaps(p) for p in placed):
                continue
            covered = sum(box.overlaps(o) for o in obstacles)
            if best is None or covered < best[0]:
                best = (covered, (dx, dy, ha, va), box)
            if covered == 0:
                break
        if best is None:  # no free spot at all: next to the point (cannot happen on sane data)
            best = (0, candidates[0], _box(px, py, w, h, "left", "bottom"))
        _, (dx, dy, ha, va), box = best
        anchor = ax.transData.inverted().transform((px + dx * px_per_pt, py + dy * px_per_pt))
        text.set_position((float(anchor[0]), float(anchor[1])))
        text.set_horizontalalignment(ha)
        text.set_verticalalignment(va)
        if math.hypot(dx, dy) > LEADER_FROM:
            _leader(ax, (px, py), box)
        placed.append(box)
        texts.append(text)
    return texts


def _leader(ax: Any, point: tuple[float, float], box: Box) -> None:
    """A thin line from the point to the nearest point of the label's box."""
    px, py = point
    nx, ny = min(max(px, box.x0), box.x1), min(max(py, box.y0), box.y1)
    inv = ax.transData.inverted()
    (x0, y0), (x1, y1) = inv.transform((px, py)), inv.transform((nx, ny))
    ax.plot([x0, x1], [y0, y1], color="0.55", linewidth=0.4, zorder=1, scalex=False, scaley=False)
