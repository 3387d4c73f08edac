"""Search-index documents written straight to Elasticsearch (no warehouse in between)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


def chunk_id_for(doc_id: str, position: int, text: str) -> str:
    """Chunk id per docs/CONTRACTS.md: sha256(doc_id \\x1f position \\x1f text)[:32]."""
    return hashlib.sha256(f"{doc_id}\x1f{position}\x1f{text}".encode()).hexdigest()[:32]


def index_document(
    doc_id: str,
    position: int,
    text: str,
    embedding: Sequence[float],
    *,
    model_id: str,
    title: str | None = None,
    uri: str | None = None,
) -> dict[str, Any]:
    """One chunk as the index holds it (the fields ``search.writer`` writes); the source is the
    doc id's prefix (``fs:a.md`` → ``fs``), title and uri default to the doc id."""
    return {
        "chunk_id": chunk_id_for(doc_id, position, text),
        "doc_id": doc_id,
        "source": doc_id.split(":", 1)[0],
        "title": doc_id if title is None else title,
        "uri": doc_id if uri is None else uri,
        "position": position,
        "section": "",
        "text": text,
        "content_hash": hashlib.sha256(text.encode()).hexdigest(),
        "model_id": model_id,
        "updated_at": datetime(2026, 1, 1, tzinfo=UTC),
        "embedding": embedding,
    }
