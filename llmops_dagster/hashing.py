"""Content identity: the one ``content_hash`` of a text.

A document's and a chunk's ``content_hash`` must be the same function: the embedding cache is
keyed by ``(model_id, content_hash)`` of chunk texts, the document table skips re-chunking by
the document's, and the search index and the warehouse compare them to decide what to sync
(docs/CONTRACTS.md). One definition here, below both ``documents`` and ``text``, so the two can
never drift apart.
"""

from __future__ import annotations

import hashlib


def content_hash(text: str) -> str:
    """sha256 hex of the UTF-8 text (64 characters)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
