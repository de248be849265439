"""Plain terminal tables, for the commands that show rows to a person (status, dlq list)."""

from __future__ import annotations


def aligned(rows: list[list[str]]) -> str:
    """`rows` (the first one a header) in left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
