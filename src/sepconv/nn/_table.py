"""The reports' tables (``ConvertReport``, ``Profile``): plain text and markdown, written once."""

from __future__ import annotations

from collections.abc import Collection, Sequence


def text_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    summary: Sequence[str],
    left: Collection[int],
) -> str:
    """Aligned columns (those in ``left`` left-aligned, the others right), then the summary.

    >>> print(text_table(["name", "n"], [["a", "10"], ["bcd", "2"]], ["total 12"], {0}))
    name   n
    a     10
    bcd    2
    total 12
    """
    table = [list(columns), *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    text = [
        "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in table
    ]
    return "\n".join([*text, *summary])


def markdown_table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], summary: Sequence[str]
) -> str:
    """A markdown table, a blank line, then the summary lines."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join([*lines, "", *summary])
