"""Markdown tables of result rows (``slam eval``'s printed table, the benchmark scripts')."""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def _cell(v: Any, fmt: str) -> str:
    """``v`` formatted with ``fmt`` (``"s"``: as text); a missing or non-finite number is ``-``."""
    if fmt == "s":
        return str(v)
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "-"
    return format(x, fmt) if math.isfinite(x) else "-"


def markdown_table(rows: Iterable[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """Markdown table of ``rows``.

    Args:
        rows: one dict per table row.
        columns: ``(header, row key, format)`` per column; format ``"s"`` is text
            (left-aligned), anything else a number format for ``format()``
            (right-aligned), e.g. ``".3f"``.
    Returns:
        The table, lines joined by newlines (no trailing newline).
    """
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |",
             "|" + "|".join("---" if f == "s" else "---:" for _, _, f in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(key), fmt) for _, key, fmt in columns) + " |")
    return "\n".join(lines)
