"""Document and rejection rows of ``llmops.documents`` / ``llmops.rejected_documents``.

Field names and meanings follow docs/CONTRACTS.md; ids are derived here and nowhere else so
that every stage agrees on them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from llmops_dagster.access import PUBLIC


class RejectReason(StrEnum):
    """Why an input did not become a document (the contract's closed list)."""

    BINARY = "binary"
    EMPTY = "empty"
    UNDECODABLE = "undecodable"
    TOO_LARGE = "too_large"
    BROKEN_PDF = "broken_pdf"
    BROKEN_HTML = "broken_html"
    UNSUPPORTED_FORMAT = "unsupported_format"
    PARSE_ERROR = "parse_error"


def make_doc_id(source: str, natural_key: str) -> str:
    """``source:natural_key``: stable across runs, readable in logs and the search index."""
    return f"{source}:{natural_key}"


def utc(value: datetime | None) -> datetime:
    """Naive datetimes are taken as UTC (DuckDB TIMESTAMP and SQLite give naive values)."""
    if value is None:
        return datetime.now(UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@dataclass(frozen=True)
class Document:
    doc_id: str
    source: str
    natural_key: str
    title: str
    text: str
    uri: str
    format: str
    updated_at: datetime
    content_hash: str
    metadata: str = "{}"
    #: Groups allowed to read the document (sorted; ``("public",)`` when the source says
    #: nothing). Not part of ``content_hash``: a permission change must not re-chunk or
    #: re-embed, only re-sync the index (the documents store compares it separately).
    allowed_groups: tuple[str, ...] = (PUBLIC,)

    def as_row(self) -> dict[str, Any]:
        # Every field is immutable (str, datetime, tuple): a shallow copy is the row, without
        # asdict's recursive deep copy (half of the documents stage on a 1,000-document batch).
        row = {name: getattr(self, name) for name in _DOCUMENT_FIELDS}
        row["allowed_groups"] = list(self.allowed_groups)
        return row


_DOCUMENT_FIELDS = tuple(f.name for f in fields(Document))


@dataclass(frozen=True)
class Rejected:
    doc_id: str
    source: str
    natural_key: str
    uri: str
    reason: str
    detail: str
    rejected_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


DOCUMENT_FIELDS: tuple[str, ...] = tuple(Document.__dataclass_fields__)
REJECTED_FIELDS: tuple[str, ...] = tuple(Rejected.__dataclass_fields__)
