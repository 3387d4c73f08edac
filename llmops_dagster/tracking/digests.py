"""Content digests of the warehouse tables, so lineage names exact data, not "latest"."""

from __future__ import annotations

import hashlib
from typing import Any

from llmops_dagster.chunks.chunk_table import CHUNKS_TABLE
from llmops_dagster.warehouse import Warehouse, as_warehouse


def documents_digest(con: Warehouse | Any) -> str:
    """sha256 over every (doc_id, content_hash[, audience]), order-independent.

    A non-public audience is part of the digest (who may read it is part of what the table
    says); public documents hash as before access control, so old lineage stays comparable.
    """
    digest = hashlib.sha256()
    rows = as_warehouse(con).fetchall(
        "SELECT doc_id, content_hash, allowed_groups FROM llmops.documents"
    )
    # Sorted here, not by ORDER BY: engines collate text differently (PostgreSQL by locale),
    # and the digest must not depend on which one holds the table.
    for doc_id, content_hash, groups in sorted(rows, key=lambda r: r[0]):
        audience = "" if list(groups or []) in ([], ["public"]) else "\x1f" + ",".join(groups)
        digest.update(f"{doc_id}\x1f{content_hash}{audience}\n".encode())
    return digest.hexdigest()


def active_chunks_digest(con: Warehouse | Any) -> str:
    """The chunk-set digest the index records in its ``_meta`` (same function)."""
    # Imported here: search.mapping pulls the Elasticsearch client, which the code location's
    # import (definitions) should not pay for.
    from llmops_dagster.search.mapping import chunk_set_digest

    ids = [
        r[0]
        for r in as_warehouse(con).fetchall(
            f"SELECT chunk_id FROM {CHUNKS_TABLE} WHERE status = 'active'"
        )
    ]
    return chunk_set_digest(ids)
