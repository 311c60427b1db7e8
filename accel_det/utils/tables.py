"""The two table layouts accel-det prints: Markdown (reports, docs) and fixed-width text
(terminal output). Cells are strings; ``align`` is one of "l" or "r" per column."""

from __future__ import annotations

from typing import Optional, Sequence


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: Optional[str] = None
) -> str:
    """A GitHub Markdown table; ``align`` (e.g. ``"llrr"``): left or right per column (default:
    the first column left, the others right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    align: Optional[str] = None,
    footer: Sequence[Sequence[str]] = (),
) -> str:
    """A fixed-width table with a rule under the header (and above ``footer`` rows); ``align``:
    left or right per column (default: all left)."""
    align = align or "l" * len(header)
    table = [list(header)] + [list(r) for r in rows] + [list(r) for r in footer]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]

    def line(row) -> str:
        cells = [
            str(c).rjust(w) if a == "r" else str(c).ljust(w) for c, w, a in zip(row, widths, align)
        ]
        return "  ".join(cells).rstrip()

    rule = "-" * len("  ".join("x" * w for w in widths))
    lines = [line(header), rule] + [line(r) for r in rows]
    if footer:
        lines += [rule] + [line(r) for r in footer]
    return "\n".join(lines)
