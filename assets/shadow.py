"""The shadow index: a fine-tuned embedding model's own index, built beside the live alias.

A new embedding model means new vectors and so a new physical index; it is never put behind the
alias before the evaluation says so. ``rag_evaluation`` (``index: shadow``) compares the
champion bundle on it with the champion on the live index, and ``champion_model`` moves the
champion bundle and the alias together (`rag/promotion.py`).
"""

import time

import dagster as dg

from assets.ingest import WAREHOUSE_WRITERS_POOL
from llmops_dagster.chunks.chunk_table import active_chunks
from llmops_dagster.embed.cache import embed_missing
from llmops_dagster.embed.finetune import FinetunedEmbedding
from llmops_dagster.resources import (
    ElasticsearchResource,
    MlflowResource,
    ModelsResource,
    WarehouseResource,
)
from llmops_dagster.search.sync import build_shadow


@dg.asset(
    ins={"embedding_finetune": dg.AssetIn("embedding_finetune")},
    deps=["embeddings"],
    group_name="model",
    kinds={"elasticsearch", "pytorch"},
    owners=["team:search"],
    pool=WAREHOUSE_WRITERS_POOL,
)
def shadow_index(
    context: dg.AssetExecutionContext,
    embedding_finetune: FinetunedEmbedding,
    models: ModelsResource,
    warehouse: WarehouseResource,
    elasticsearch: ElasticsearchResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """Every active chunk embedded by the fine-tuned model (the embedding cache keeps its
    vectors apart from the base model's) into a new verified index `<alias>-<stamp>-<digest8>`
    whose `_meta` names the model and `shadow_of: <alias>`; the alias does not move."""
    started = time.perf_counter()
    try:
        embedder = models.embedder_for(embedding_finetune.model_id)
    except LookupError as exc:  # UnknownEmbeddingModelError: names the id and the folder
        raise dg.Failure(str(exc)) from exc
    if embedder.model_id != embedding_finetune.model_id:
        raise dg.Failure(
            f"{embedding_finetune.path} loads as {embedder.model_id}, not the fine-tuned "
            f"model's id {embedding_finetune.model_id}"
        )
    client = elasticsearch.get_client()
    with warehouse.get_connection() as con:
        table = active_chunks(con).select(["content_hash", "text"])
        items = list(
            zip(
                table.column("content_hash").to_pylist(),
                table.column("text").to_pylist(),
                strict=True,
            )
        )
        stats = embed_missing(con, embedder, items, batch_size=models.embed_batch_size)
        layout = elasticsearch.index_layout()
        report = build_shadow(
            client,
            con,
            alias=elasticsearch.alias,
            model_id=embedder.model_id,
            dims=embedder.dims,
            **layout,
        )
    seconds = time.perf_counter() - started
    context.log.info(f"shadow {report.index} of {report.alias}: {report.doc_count} chunks")
    lineage = mlflow.log_asset_run(
        context,
        params={"index": report.index, "alias": report.alias, "model_id": embedder.model_id},
        metrics={"count": report.doc_count, "embedded": stats.embedded, "seconds": seconds},
        tags={
            "index.name": report.index,
            "index.shadow_of": report.alias,
            "embedding.model_id": embedder.model_id,
            "embedding.base_model_id": embedding_finetune.base_model_id,
        },
    )
    return dg.MaterializeResult(
        metadata={
            **lineage,
            "index": report.index,
            "shadow_of": report.alias,
            "model_id": embedder.model_id,
            "base_model_id": embedding_finetune.base_model_id,
            "count": report.doc_count,
            "embedded": stats.embedded,
            "cached": stats.cached,
            "chunk_set_digest": report.chunk_set_digest,
            "seconds": round(seconds, 3),
        }
    )
