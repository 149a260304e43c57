"""The one Markdown table writer: every cell inert, code-composed cells kept, alignment."""

import pytest

from pebench.report.mdtable import Markdown, cell, prose, table, text


def test_untrusted_cells_are_one_line_without_html_backticks_or_columns():
    hostile = "<img src=x onerror=alert(1)>\n## pwned `x` | y & z"
    assert cell(hostile) == "&lt;img src=x onerror=alert(1)&gt; ## pwned 'x' \\| y &amp; z"
    assert text(3.5) == "3.5"


def test_markdown_cells_keep_their_markup_and_lose_only_line_breaks_and_pipes():
    assert cell(Markdown(f"`{text('a<b')}`")) == "`a&lt;b`"
    assert cell(Markdown("**total**\n| x")) == "**total** \\| x"


def test_prose_keeps_paired_code_spans_and_drops_an_odd_backtick():
    assert prose("see `org/repo#16` <here>") == "see `org/repo#16` &lt;here&gt;"
    assert prose("a ` b") == "a ' b" and isinstance(prose("x"), Markdown)


def test_table_aligns_and_checks_its_alignment():
    assert table(["m", "n"], [["lora", "1,234"], ["a|b", "2"]], align="lr") == [
        "| m | n |",
        "|---|---:|",
        "| lora | 1,234 |",
        "| a\\|b | 2 |",
    ]
    assert table(["m"], [])[1] == "|---|"
    with pytest.raises(ValueError, match="one of l, r per column"):
        table(["m", "n"], [], align="l")
