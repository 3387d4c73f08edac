"""Small helpers that turn library results into Dagster metadata (previews as Markdown)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dagster as dg


def markdown_table(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[str], *, width: int = 80
) -> str:
    def cell(value: Any) -> str:
        text = str(value).replace("\n", " ").replace("|", "\\|")
        return text if len(text) <= width else text[: width - 1] + "…"

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def md(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> dg.MarkdownMetadataValue:
    return dg.MetadataValue.md(markdown_table(rows, columns))
