"""The embeddings asset: vectors for every active chunk, computed once per (model, text)."""

from typing import Any

import dagster as dg

from assets.ingest import WAREHOUSE_WRITERS_POOL
from llmops_dagster.chunks.chunk_table import active_chunks
from llmops_dagster.embed.cache import embed_missing
from llmops_dagster.resources import (
    ElasticsearchResource,
    MlflowResource,
    ModelsResource,
    WarehouseResource,
)


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
    elasticsearch: ElasticsearchResource,
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
        # The other models in use (the live index's after a promotion, each shadow's under
        # evaluation): the reindex syncs those indices with their own model's vectors.
        others = _other_models(context, elasticsearch, models, stats.model_id)
        other_stats = {
            model_id: embed_missing(con, other, items, batch_size=batch_size, progress=progress)
            for model_id, other in others.items()
        }
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
            "other_models": ", ".join(other_stats),
            **{f"embedded/{m}": o.embedded for m, o in other_stats.items()},
            **{f"cached/{m}": o.cached for m, o in other_stats.items()},
        }
    )


def _other_models(
    context: dg.AssetExecutionContext,
    elasticsearch: ElasticsearchResource,
    models: ModelsResource,
    configured: str,
) -> dict[str, Any]:
    """model id → embedder of every model in use besides the configured one; a model that is
    no longer loadable is skipped with a warning."""
    from elasticsearch import exceptions as es_exceptions

    from llmops_dagster.embed.model_store import UnknownEmbeddingModelError
    from llmops_dagster.search.client import ElasticsearchUnavailable
    from llmops_dagster.search.sync import models_in_use

    found = {}
    try:
        used = models_in_use(elasticsearch.get_client(), elasticsearch.alias, configured)
    except (
        ElasticsearchUnavailable,
        es_exceptions.ConnectionError,
        es_exceptions.ConnectionTimeout,
    ) as exc:
        # Embedding needs no cluster: the configured model's vectors are still computed, and
        # search_index (which needs one) fails with the cluster's address.
        context.log.warning(f"Elasticsearch unreachable, other models in use unknown: {exc}")
        return {}
    for model_id, users in used.items():
        if model_id == configured:
            continue
        try:
            found[model_id] = models.embedder_for(model_id)
        except UnknownEmbeddingModelError as exc:
            # search_index reports it too: a shadow that cannot follow, or a live index whose
            # model is gone (rebuilt with the configured model, the reason in its metadata).
            context.log.warning(f"{', '.join(users)}: not embedded: {exc}")
    return found
