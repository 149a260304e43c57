"""Markdown tables with inert cells: the one table writer of every Markdown pebench generates.

Cell text comes from files anyone can edit (result rows, ``reported.csv``, a plugin's names), so
every cell is made inert before it enters a table: one line (a line break would end the table
or start a heading), no HTML (``<``, ``>`` and ``&`` become entities: no ``<img onerror=...>``),
no backticks (they would close the code spans the text sits in), and ``|`` escaped (an extra
column). Text the code composes itself around such values (a code span, bold) is a
:class:`Markdown` cell: kept as written, only made one line with its pipes escaped.

Standard library only: the run-side commands (``pebench bench``, ``pebench pretrain``) use it
without loading the report's matplotlib or scipy.
"""

from __future__ import annotations

from collections.abc import Sequence

#: the separator cell of each alignment
_RULE = {"l": "---", "r": "---:"}


class Markdown(str):
    """A cell the code composed itself from inert parts (:func:`text`): kept as Markdown."""

    __slots__ = ()


def text(value: object) -> str:
    """A value from the rows as inert Markdown text: one line, no HTML, no code-span breakout.

    Method, task, suite and error fields come from result files anyone can edit: ``<``, ``>``
    and ``&`` become entities (no ``<img onerror=...>`` or ``<script>``), line breaks spaces (no
    injected heading), and backticks are dropped (they would close the code spans around names).
    """
    one_line = " ".join(str(value).split())
    return (
        one_line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "'")
    )


def prose(value: object) -> Markdown:
    """Free text that may carry its own code spans (a source note): inert, its spans kept.

    As :func:`text`, except that backticks stay when they pair up (a code span shows its content
    literally); an odd one out is dropped as :func:`text` drops it. Only for text that the code
    does not put inside a code span of its own.
    """
    one_line = " ".join(str(value).split())
    escaped = one_line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return Markdown(escaped if escaped.count("`") % 2 == 0 else escaped.replace("`", "'"))


def cell(value: object) -> str:
    """One table cell: a :class:`Markdown` cell as written, anything else as :func:`text`."""
    inert = " ".join(value.split()) if isinstance(value, Markdown) else text(value)
    return inert.replace("|", "\\|")


def table(
    header: Sequence[object], rows: Sequence[Sequence[object]], align: str | None = None
) -> list[str]:
    """The lines of a Markdown table, every cell made inert (:func:`cell`).

    Args:
        header: the column headers.
        rows: the body, one sequence of cells per row.
        align: one letter per column, ``l`` (left, the default) or ``r`` (right).

    Returns:
        The header line, the separator line and one line per row.

    Raises:
        ValueError: ``align`` does not give one known letter per column.

    """
    align = "l" * len(header) if align is None else align
    if len(align) != len(header) or set(align) - set(_RULE):
        raise ValueError(f"align {align!r}: one of l, r per column ({len(header)})")
    out = ["| " + " | ".join(cell(h) for h in header) + " |"]
    out.append("|" + "|".join(_RULE[a] for a in align) + "|")
    out.extend("| " + " | ".join(cell(c) for c in row) + " |" for row in rows)
    return out


__all__ = ["Markdown", "cell", "prose", "table", "text"]
