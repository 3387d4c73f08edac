"""The embeddings asset: vectors for every active chunk, computed once per (model, text)."""

import dagster as dg

from assets.ingest import WAREHOUSE_WRITERS_POOL
from llmops_dagster.chunks.chunk_table import active_chunks
from llmops_dagster.embed.cache import embed_missing
from llmops_dagster.resources import MlflowResource, ModelsResource, WarehouseResource


@dg.asset(
    deps=["chunks"],
    group_name="prepare",
    kinds={"pytorch", "duckdb"},
    owners=["team:ml-platform"],
    pool=WAREHOUSE_WRITERS_POOL,
)
def embeddings(
    context: dg.AssetExecutionContext,
    models: ModelsResource,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """Normalised sentence-transformers vectors in `llmops.embedding_cache`.

    Keyed by (model id, chunk text hash): unchanged text is never embedded twice, and a new
    model id gets its own vectors instead of mixing spaces.
    """
    batch_size = models.embed_batch_size
    with warehouse.get_connection() as con:
        chunk_table = active_chunks(con).select(["content_hash", "text"])
        items = list(
            zip(
                chunk_table.column("content_hash").to_pylist(),
                chunk_table.column("text").to_pylist(),
                strict=True,
            )
        )
        embedder = models.embedder()

        def progress(done: int, total: int) -> None:
            context.log.info(f"embedded {done}/{total} new texts")

        stats = embed_missing(con, embedder, items, batch_size=batch_size, progress=progress)
    context.log.info(
        f"{stats.embedded} embedded, {stats.cached} from cache ({stats.texts_per_second:.1f}/s)"
    )
    lineage = mlflow.log_asset_run(
        context,
        params={
            "model_id": stats.model_id,
            "dims": stats.dims,
            "batch_size": batch_size,
        },
        metrics={
            "embedded": stats.embedded,
            "cached": stats.cached,
            "texts_per_second": stats.texts_per_second,
        },
        tags={"embedding.model_id": stats.model_id},
    )
    return dg.MaterializeResult(
        metadata={
            **lineage,
            "model_id": stats.model_id,
            "dims": stats.dims,
            "active_chunks": len(items),
            "distinct_texts": stats.requested,
            "embedded": stats.embedded,
            "cached": stats.cached,
            "embed_seconds": round(stats.seconds, 3),
            "texts_per_second": round(stats.texts_per_second, 1),
            "batch_size": batch_size,
        }
    )
