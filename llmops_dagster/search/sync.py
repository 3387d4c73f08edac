"""Reverse-ETL: the active chunks and their cached vectors → the Elasticsearch alias.

Incremental mode diffs the live index against the warehouse (ids, content hashes and audiences
read back from Elasticsearch), so a run after a crash, a lost bulk request or a manual edit
converges to exact counts instead of trusting what an earlier run believed it had written. The
audience is part of the compared key (:func:`sync_key`), so a permission change re-writes
exactly that document's chunks — with the vectors already cached: nothing is re-embedded.
Rebuild mode writes a new versioned index and swaps the alias atomically (see
``aliases.rebuild``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_exceptions
from elasticsearch.helpers import scan

from llmops_dagster.access import AUDIENCE_FIELD, AccessError, normalize_audience
from llmops_dagster.chunks.chunk_table import CHUNKS_TABLE
from llmops_dagster.embed.cache import CACHE_TABLE
from llmops_dagster.search.aliases import current_index, rebuild
from llmops_dagster.search.mapping import (
    IndexSpec,
    VectorIndexOptions,
    build_index_body,
    chunk_set_digest,
    index_meta,
    mapped_fields,
)
from llmops_dagster.search.writer import write_chunks
from llmops_dagster.warehouse import Warehouse, as_warehouse

Mode = Literal["incremental", "rebuild"]

# Chunks joined with their document's fields and their vector for the current model.
_CHUNK_DOCS_SQL = f"""
SELECT c.chunk_id, c.doc_id, d.source, d.title, d.uri, c.position, c.section, c.text,
       c.content_hash, ? AS model_id, d.updated_at, d.allowed_groups, v.vector AS embedding
FROM {CHUNKS_TABLE} c
JOIN llmops.documents d USING (doc_id)
LEFT JOIN {CACHE_TABLE} v ON v.content_hash = c.content_hash AND v.model_id = ?
WHERE c.status = 'active'
"""


class IndexSyncError(RuntimeError):
    """The index cannot be brought in line with the warehouse; the message says why."""


@dataclass
class IndexSyncReport:
    mode: Mode
    alias: str
    index: str
    previous_index: str | None
    chunk_count: int
    indexed: int = 0
    deleted: int = 0
    unchanged: int = 0
    doc_count: int = 0
    chunk_set_digest: str = ""
    seconds: float = 0.0
    reason: str = ""
    kept_indices: list[str] = field(default_factory=list)
    deleted_indices: list[str] = field(default_factory=list)
    #: Seconds of ``seconds`` spent in the bulk load (reading, encoding, Elasticsearch
    #: indexing); the rest is index creation, refresh, verification and the alias swap. For
    #: the throughput benchmark; not part of the asset metadata.
    load_seconds: float = 0.0

    def as_metadata(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "alias": self.alias,
            "index": self.index,
            "previous_index": self.previous_index or "",
            "chunk_count": self.chunk_count,
            "indexed": self.indexed,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
            "doc_count": self.doc_count,
            "chunk_set_digest": self.chunk_set_digest,
            "seconds": round(self.seconds, 3),
            "reason": self.reason,
            "kept_indices": ", ".join(self.kept_indices),
            "deleted_indices": ", ".join(self.deleted_indices),
        }


def active_chunk_ids(con: Warehouse | Any) -> dict[str, str]:
    """chunk_id → content_hash of every active chunk."""
    return dict(
        as_warehouse(con).fetchall(
            f"SELECT chunk_id, content_hash FROM {CHUNKS_TABLE} WHERE status = 'active'"
        )
    )


def _missing_vectors(con: Warehouse, model_id: str) -> int:
    missing = con.scalar(
        f"SELECT count(*) FROM {CHUNKS_TABLE} c LEFT JOIN {CACHE_TABLE} v "
        "ON v.content_hash = c.content_hash AND v.model_id = ? "
        "WHERE c.status = 'active' AND v.vector IS NULL",
        [model_id],
    )
    return int(missing)


def iter_chunk_documents(
    con: Warehouse | Any,
    model_id: str,
    *,
    only_ids: set[str] | None = None,
    batch_rows: int = 1000,
) -> Iterator[dict[str, Any]]:
    """Elasticsearch documents (CONTRACTS.md) streamed from the warehouse in Arrow batches."""
    batches = as_warehouse(con).iter_arrow(
        _CHUNK_DOCS_SQL, [model_id, model_id], batch_rows=batch_rows
    )
    for batch in batches:
        vectors = _vector_lists(batch.column("embedding"))
        rest = batch if vectors is None else batch.drop_columns(["embedding"])
        rows = rest.to_pylist()
        for i, row in enumerate(rows):
            if only_ids is not None and row["chunk_id"] not in only_ids:
                continue
            if vectors is not None:
                row["embedding"] = vectors[i]
            row["section"] = row["section"] or ""
            yield row


def _vector_lists(column: pa.Array) -> list[list[float]] | None:
    """The vector column as lists of Python floats, through numpy: the same floats
    ``to_pylist`` gives (float32 widened exactly), ~10x faster than boxing value by value.
    ``None`` (the caller uses ``to_pylist``) for anything but equal-length float vectors
    without nulls."""
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        return None
    if column.null_count or not pa.types.is_floating(column.type.value_type):
        return None
    lengths = column.value_lengths().to_numpy(zero_copy_only=False)
    values = column.flatten()
    if len(column) == 0 or values.null_count or lengths.min() != lengths.max():
        return None
    matrix = values.to_numpy(zero_copy_only=False).astype(np.float64)
    return matrix.reshape(len(column), int(lengths[0])).tolist()


def _peek(docs: Iterator[dict[str, Any]]) -> tuple[dict[str, Any] | None, Iterator[dict[str, Any]]]:
    """The first document (the smoke query's vector and text) and the whole stream: one query
    instead of a second full one whose first Arrow batch was converted for a single row."""
    first = next(docs, None)
    return first, (docs if first is None else itertools.chain([first], docs))


def sync_key(content_hash: str, allowed_groups: Any) -> str:
    """What the incremental sync compares per chunk: its text hash and its audience.

    Not the embedding cache key (model, text hash): a permission change re-writes the chunk
    in Elasticsearch but re-uses its vector.
    """
    return f"{content_hash}|{','.join(normalize_audience(allowed_groups))}"


def active_chunk_sync_keys(con: Warehouse | Any) -> dict[str, str]:
    """chunk_id → :func:`sync_key` of every active chunk (audience from its document)."""
    rows = as_warehouse(con).fetchall(
        f"SELECT c.chunk_id, c.content_hash, d.allowed_groups FROM {CHUNKS_TABLE} c "
        "LEFT JOIN llmops.documents d USING (doc_id) WHERE c.status = 'active'"
    )
    return {chunk_id: sync_key(content_hash, groups) for chunk_id, content_hash, groups in rows}


def live_chunk_sync_keys(client: Elasticsearch, alias: str) -> dict[str, str]:
    """chunk_id → :func:`sync_key` of what the live index holds now (ids and two keywords)."""
    hits = scan(
        client,
        index=alias,
        query={"query": {"match_all": {}}, "_source": ["content_hash", AUDIENCE_FIELD]},
        size=2000,
    )
    return {hit["_id"]: _live_key(hit["_source"]) for hit in hits}


def _live_key(source: dict[str, Any]) -> str:
    content = str(source.get("content_hash", ""))
    try:
        return sync_key(content, source.get(AUDIENCE_FIELD))
    except AccessError:  # a hand-edited, invalid audience: never equal, so it is re-written
        return f"{content}|<invalid>"


def _index_spec(
    model_id: str, dims: int, *, shards: int, replicas: int, hnsw_m: int, ef_construction: int
) -> IndexSpec:
    return IndexSpec(
        dims=dims,
        model_id=model_id,
        shards=shards,
        replicas=replicas,
        vector_options=VectorIndexOptions(m=hnsw_m, ef_construction=ef_construction),
    )


def _client_url(client: Elasticsearch) -> str:
    try:
        return str(client.transport.node_pool.all()[0].base_url)
    except (AttributeError, IndexError):
        return "the configured cluster"


def sync_index(client: Elasticsearch, con: Warehouse | Any, **kwargs: Any) -> IndexSyncReport:
    """Bring the alias in line with the warehouse (see :func:`_sync_index` for the arguments).

    A cluster that goes away mid-run becomes an :class:`IndexSyncError` naming the URL: the
    alias is untouched by a failed rebuild, and a rerun converges because the sync diffs the
    live index against the warehouse.
    """
    try:
        return _sync_index(client, as_warehouse(con), **kwargs)
    except (es_exceptions.ConnectionError, es_exceptions.ConnectionTimeout) as exc:
        raise IndexSyncError(
            f"Elasticsearch at {_client_url(client)} became unreachable during the "
            f"{kwargs.get('mode', 'incremental')} sync of {kwargs.get('alias')} "
            f"(connection error: {exc}); the live alias was not moved — rerun once the "
            "cluster is back (the sync is idempotent)"
        ) from exc


def _sync_index(
    client: Elasticsearch,
    con: Warehouse,
    *,
    alias: str,
    model_id: str,
    dims: int,
    mode: Mode = "incremental",
    keep: int = 2,
    shards: int = 1,
    replicas: int = 0,
    hnsw_m: int = 16,
    ef_construction: int = 100,
    bulk_chunk_size: int = 500,
    log: Callable[[str], None] = lambda _m: None,
) -> IndexSyncReport:
    """Bring the alias in line with the warehouse's active chunks.

    Incremental mode upserts chunks the live index lacks and deletes chunks it should no longer
    hold. It switches to a rebuild when there is no alias yet, or when the live index was built
    for another embedding model or dimension (mixing vector spaces would silently corrupt kNN).
    """
    started = time.perf_counter()
    _require_vectors(con, model_id)
    wanted = active_chunk_ids(con)
    previous = current_index(client, alias)
    reason = "requested"
    if mode == "incremental":
        if previous is None:
            mode, reason = "rebuild", f"alias {alias} does not exist yet"
        else:
            meta = index_meta(client, previous)
            if meta.get("model_id") != model_id or int(meta.get("dims", -1)) != dims:
                mode = "rebuild"
                reason = (
                    f"live index {previous} holds {meta.get('model_id')} "
                    f"({meta.get('dims')} dims), not {model_id} ({dims} dims)"
                )
            elif AUDIENCE_FIELD not in mapped_fields(client, previous):
                # Its chunks carry no audience: every access-filtered query would miss them,
                # and the strict mapping refuses the field on upsert. A new index is built.
                mode = "rebuild"
                reason = f"live index {previous} predates access control (no {AUDIENCE_FIELD})"
            elif "text_stemming" not in meta:
                # Built before stemming (schema < 3): BM25 misses inflected forms. The rebuild
                # re-uses the cached vectors, so nothing is re-embedded.
                mode = "rebuild"
                reason = f"live index {previous} predates text stemming (no _meta.text_stemming)"
    digest = chunk_set_digest(wanted)
    if mode == "rebuild":
        log(f"rebuilding {alias} ({len(wanted)} chunks): {reason}")
        spec = _index_spec(
            model_id, dims, shards=shards, replicas=replicas, hnsw_m=hnsw_m,
            ef_construction=ef_construction,
        )  # fmt: skip
        body = build_index_body(spec, client=client)
        smoke, docs = _peek(iter_chunk_documents(con, model_id))
        result = rebuild(
            client,
            alias,
            docs,
            expected_count=len(wanted),
            index_body=body,
            smoke_query_vector=smoke["embedding"] if smoke else None,
            smoke_query_text=smoke["text"][:200] if smoke else None,
            keep=keep,
            digest=digest,
            bulk_options={"chunk_size": bulk_chunk_size},
        )
        return IndexSyncReport(
            mode="rebuild",
            alias=alias,
            index=result.index,
            previous_index=result.previous_index,
            chunk_count=len(wanted),
            indexed=result.bulk.indexed,
            doc_count=client.count(index=alias)["count"],
            chunk_set_digest=result.chunk_set_digest,
            seconds=time.perf_counter() - started,
            reason=reason,
            kept_indices=result.kept_indices,
            deleted_indices=result.deleted_indices,
            load_seconds=result.seconds_load,
        )

    assert previous is not None
    report = _incremental(
        client, con, alias, previous, model_id, wanted, digest, bulk_chunk_size, log,
        is_alias=True,
    )  # fmt: skip
    report.reason = reason
    report.seconds = time.perf_counter() - started
    return report


def _incremental(
    client: Elasticsearch,
    con: Warehouse,
    target: str,
    physical: str,
    model_id: str,
    wanted: dict[str, str],
    digest: str,
    bulk_chunk_size: int,
    log: Callable[[str], None],
    *,
    is_alias: bool,
) -> IndexSyncReport:
    """Diff ``target`` (the alias, or a shadow index by name) against the warehouse and write
    exactly the difference, embedded by ``model_id``."""
    live = live_chunk_sync_keys(client, target)
    wanted_keys = active_chunk_sync_keys(con)
    upsert = {cid for cid, key in wanted_keys.items() if live.get(cid) != key}
    delete = sorted(set(live) - set(wanted_keys))
    log(f"incremental sync of {target}: {len(upsert)} to upsert, {len(delete)} to delete")
    bulk = write_chunks(
        client,
        target,
        iter_chunk_documents(con, model_id, only_ids=upsert) if upsert else (),
        delete,
        chunk_size=bulk_chunk_size,
        require_alias=is_alias,
        refresh=True,
    )
    try:
        meta = index_meta(client, physical)
        meta.update({"chunk_set_digest": digest, "chunk_count": len(wanted)})
        client.indices.put_mapping(index=physical, meta=meta)
    except es_exceptions.ApiError as exc:  # the data is right; the label can be fixed next run
        log(f"could not update _meta of {physical}: {exc}")
    return IndexSyncReport(
        mode="incremental",
        alias=target,
        index=physical,
        previous_index=physical,
        chunk_count=len(wanted),
        indexed=bulk.indexed,
        deleted=bulk.deleted,
        unchanged=len(wanted) - len(upsert),
        doc_count=client.count(index=target)["count"],
        chunk_set_digest=digest,
        load_seconds=bulk.seconds,
    )


def _require_vectors(con: Warehouse, model_id: str) -> None:
    missing = _missing_vectors(con, model_id)
    if missing:
        raise IndexSyncError(
            f"{missing} active chunks have no vector for model {model_id!r}: "
            "materialize the embeddings asset first"
        )


def sync_shadow(
    client: Elasticsearch,
    con: Warehouse | Any,
    index: str,
    *,
    bulk_chunk_size: int = 500,
    log: Callable[[str], None] = lambda _m: None,
) -> IndexSyncReport:
    """Bring a shadow index (by its physical name) in line with the warehouse, embedded by the
    model its ``_meta.model_id`` records: an evaluation compares it with the live index on the
    same chunks, never on stale ones."""
    started = time.perf_counter()
    con = as_warehouse(con)
    model_id = str(index_meta(client, index).get("model_id") or "")
    if not model_id:
        raise IndexSyncError(f"shadow index {index} records no _meta.model_id")
    _require_vectors(con, model_id)
    wanted = active_chunk_ids(con)
    report = _incremental(
        client, con, index, index, model_id, wanted, chunk_set_digest(wanted), bulk_chunk_size,
        log, is_alias=False,
    )  # fmt: skip
    report.seconds = time.perf_counter() - started
    return report


def build_shadow(
    client: Elasticsearch,
    con: Warehouse | Any,
    *,
    alias: str,
    model_id: str,
    dims: int,
    shards: int = 1,
    replicas: int = 0,
    hnsw_m: int = 16,
    ef_construction: int = 100,
    bulk_chunk_size: int = 500,
    keep: int = 2,
) -> IndexSyncReport:
    """A shadow index of ``alias`` for ``model_id`` (whose vectors must be in the embedding
    cache): every active chunk, verified, the alias NOT moved (``aliases.build_shadow_index``).
    ``keep`` is accepted for the layout's sake (a shadow prunes nothing)."""
    from llmops_dagster.search.aliases import build_shadow_index

    del keep
    started = time.perf_counter()
    con = as_warehouse(con)
    _require_vectors(con, model_id)
    wanted = active_chunk_ids(con)
    spec = _index_spec(
        model_id, dims, shards=shards, replicas=replicas, hnsw_m=hnsw_m,
        ef_construction=ef_construction,
    )  # fmt: skip
    smoke, docs = _peek(iter_chunk_documents(con, model_id))
    result = build_shadow_index(
        client,
        alias,
        docs,
        len(wanted),
        build_index_body(spec, client=client),
        smoke_query_vector=smoke["embedding"] if smoke else None,
        smoke_query_text=smoke["text"][:200] if smoke else None,
        digest=chunk_set_digest(wanted),
        bulk_options={"chunk_size": bulk_chunk_size},
    )
    return IndexSyncReport(
        mode="rebuild",
        alias=alias,
        index=result.index,
        previous_index=None,
        chunk_count=len(wanted),
        indexed=result.bulk.indexed,
        doc_count=client.count(index=result.index)["count"],
        chunk_set_digest=result.chunk_set_digest,
        seconds=time.perf_counter() - started,
        reason=f"shadow of {alias} for {model_id}",
    )


def live_model_id(client: Elasticsearch, alias: str) -> str | None:
    """The embedding model of the index the alias points at (None: no alias yet)."""
    live = current_index(client, alias)
    if live is None:
        return None
    return str(index_meta(client, live).get("model_id") or "") or None


def models_in_use(client: Elasticsearch, alias: str, configured: str) -> dict[str, list[str]]:
    """model id → what uses it (``configured``, ``live``, ``shadow <index>``): every model
    whose vectors the active chunks need, so a reindex keeps each index it syncs complete."""
    from llmops_dagster.search.aliases import shadow_indices

    used: dict[str, list[str]] = {configured: ["configured"]}
    live = live_model_id(client, alias)
    if live:
        used.setdefault(live, []).append("live")
    for shadow in shadow_indices(client, alias):
        model = str(index_meta(client, shadow).get("model_id") or "")
        if model:
            used.setdefault(model, []).append(f"shadow {shadow}")
    return used
