"""The chunks asset: token-aware chunks of changed documents only."""

import hashlib
import time

import dagster as dg
import pyarrow as pa

from assets._metadata import md
from assets.ingest import WAREHOUSE_WRITERS_POOL
from llmops_dagster.chunks.chunk_table import sync_chunks
from llmops_dagster.documents.document_table import read_documents
from llmops_dagster.resources import (
    MlflowResource,
    ModelsResource,
    TextResource,
    WarehouseResource,
)
from llmops_dagster.text.chunking import chunk_document
from llmops_dagster.tracking.digests import active_chunks_digest
from llmops_dagster.tracking.runs import DatasetRef


class ChunksConfig(dg.Config):
    chunk_size: int | None = None
    """Max tokens per chunk (embedding model tokenizer); default: the text resource's."""
    overlap: int | None = None
    """Tokens shared by consecutive chunks of a section; default: the text resource's."""


@dg.asset(
    deps=["documents"],
    group_name="prepare",
    kinds={"duckdb", "python"},
    owners=["team:data-platform"],
    pool=WAREHOUSE_WRITERS_POOL,
)
def chunks(
    context: dg.AssetExecutionContext,
    config: ChunksConfig,
    text: TextResource,
    models: ModelsResource,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """Structure-aware chunks sized in the embedding model's tokens (`llmops.chunks`).

    Only documents whose text or chunker settings changed are re-chunked; chunks of changed or
    deleted documents are marked `removed` so the index can delete them.
    """
    size = config.chunk_size or text.chunk_size_tokens
    overlap = text.chunk_overlap_tokens if config.overlap is None else config.overlap
    tokenizer = models.tokenizer()
    # The fingerprint makes a settings change re-chunk everything, and nothing else does.
    fingerprint = hashlib.sha256(f"{models.embedding_model}|{size}|{overlap}".encode()).hexdigest()[
        :16
    ]

    def chunker(doc_id: str, text: str, fmt: str):
        return chunk_document(
            doc_id, text, tokenizer=tokenizer, chunk_size=size, overlap=overlap, fmt=fmt
        )

    def progress(done: int, total: int) -> None:
        if done == total or done % 100 == 0:
            context.log.info(f"chunked {done}/{total} changed documents")

    started = time.perf_counter()
    with warehouse.get_connection() as con:
        documents = read_documents(con).select(["doc_id", "content_hash", "text", "format"])
        report = sync_chunks(con, documents, chunker, fingerprint=fingerprint, progress=progress)
        shown = pa.table({"doc_id": pa.array(report.chunked_doc_ids[:10], pa.string())})
        with con.temp_table("_preview_docs", shown):
            preview = con.fetchall(
                "SELECT chunk_id, doc_id, position, token_count, section FROM llmops.chunks "
                "WHERE status = 'active' AND doc_id IN (SELECT doc_id FROM _preview_docs) "
                "ORDER BY doc_id, position LIMIT 10"
            )
        digest = active_chunks_digest(con)
    if report.failed:
        context.log.warning(f"{len(report.failed)} documents failed to chunk: {report.failed}")
    columns = ["chunk_id", "doc_id", "position", "token_count", "section"]
    lineage = mlflow.log_asset_run(
        context,
        params={
            "chunk_size_tokens": size,
            "overlap_tokens": overlap,
            "tokenizer": models.embedding_model,
            "chunker_fingerprint": fingerprint,
        },
        metrics={
            "docs_chunked": report.docs_chunked,
            "chunks_added": report.chunks_added,
            "chunks_removed": report.chunks_removed,
            "active_chunks": report.active_chunks,
        },
        tags={"chunk_set.digest": digest},
        datasets=[DatasetRef(name="chunks", digest=digest[:16], source=warehouse.location)],
    )
    return dg.MaterializeResult(
        metadata={
            **lineage,
            "chunk_set_digest": digest,
            "docs_seen": report.docs_seen,
            "docs_chunked": report.docs_chunked,
            "docs_unchanged": report.docs_unchanged,
            "docs_removed": report.docs_removed,
            "docs_failed": len(report.failed),
            "chunks_added": report.chunks_added,
            "chunks_removed": report.chunks_removed,
            "chunks_kept": report.chunks_kept,
            "active_chunks": report.active_chunks,
            "chunk_size_tokens": size,
            "overlap_tokens": overlap,
            "chunker_fingerprint": fingerprint,
            "seconds": round(time.perf_counter() - started, 3),
            "preview": md([dict(zip(columns, r, strict=True)) for r in preview], columns),
            "dagster/row_count": dg.MetadataValue.int(report.active_chunks),
        }
    )
