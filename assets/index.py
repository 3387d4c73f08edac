"""The search index asset (reverse-ETL into Elasticsearch) and its blocking quality checks."""

import dagster as dg

from assets.ingest import WAREHOUSE_WRITERS_POOL
from llmops_dagster.embed.model_store import UnknownEmbeddingModelError
from llmops_dagster.resources import (
    ElasticsearchResource,
    MlflowResource,
    ModelsResource,
    WarehouseResource,
)
from llmops_dagster.search.aliases import alias_indices, shadow_indices
from llmops_dagster.search.mapping import index_meta, mapped_vector_dims
from llmops_dagster.search.sync import (
    IndexSyncError,
    active_chunk_ids,
    live_model_id,
    sync_index,
    sync_shadow,
)


class SearchIndexConfig(dg.Config):
    full_rebuild: bool = False
    """Build a new versioned index and swap the alias atomically (default: incremental)."""


@dg.asset(
    deps=["embeddings"],
    group_name="index",
    kinds={"elasticsearch"},
    owners=["team:search"],
    pool=WAREHOUSE_WRITERS_POOL,
    tags={"llmops/writes": "search-alias"},
    # Transient cluster trouble (a restart, a 503 burst) is retried; the sync diffs the live
    # index against the warehouse, so a retry after a half-written bulk converges exactly.
    retry_policy=dg.RetryPolicy(max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL),
)
def search_index(
    context: dg.AssetExecutionContext,
    config: SearchIndexConfig,
    models: ModelsResource,
    warehouse: WarehouseResource,
    elasticsearch: ElasticsearchResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """BM25 + int8-HNSW hybrid index behind an alias, one document per active chunk.

    Incremental by default: upserts what the live index lacks and deletes removed chunks, by
    chunk id. `full_rebuild` writes `<alias>-<version>`, verifies count and a smoke query, then
    swaps the alias in one atomic call; previous versions are kept for rollback.
    """
    client = elasticsearch.get_client()
    embedder, model_reason = _live_embedder(client, elasticsearch.alias, models)
    if model_reason:
        context.log.warning(model_reason)
    shadows: dict[str, dict[str, int]] = {}
    shadow_errors: list[str] = []
    with warehouse.get_connection() as con:
        report = sync_index(
            client,
            con,
            alias=elasticsearch.alias,
            model_id=embedder.model_id,
            dims=embedder.dims,
            mode="rebuild" if config.full_rebuild else "incremental",
            **elasticsearch.index_layout(),
            log=context.log.info,
        )
        # Shadows under evaluation follow the same chunks (each with its own model), so a
        # comparison with the live index is never made on stale data.
        for shadow in shadow_indices(client, elasticsearch.alias):
            try:
                synced = sync_shadow(client, con, shadow, log=context.log.info)
            except (IndexSyncError, UnknownEmbeddingModelError) as exc:
                # The live index is what serves: a shadow that cannot follow is reported (and
                # refused by its evaluation's staleness check), never a failed reindex.
                shadow_errors.append(f"{shadow}: {exc}")
                context.log.warning(f"shadow {shadow} not synced: {exc}")
                continue
            shadows[shadow] = {"indexed": synced.indexed, "deleted": synced.deleted}
    lineage = mlflow.log_asset_run(
        context,
        params={
            "mode": report.mode,
            "alias": report.alias,
            "index": report.index,
            "model_id": embedder.model_id,
            "dims": embedder.dims,
        },
        metrics={
            "indexed": report.indexed,
            "deleted": report.deleted,
            "doc_count": report.doc_count,
        },
        tags={
            "index.name": report.index,
            "index.alias": report.alias,
            "chunk_set.digest": report.chunk_set_digest,
            "embedding.model_id": embedder.model_id,
        },
    )
    return dg.MaterializeResult(
        metadata={
            **lineage,
            **report.as_metadata(),
            "elasticsearch_url": elasticsearch.url,
            "model_id": embedder.model_id,
            "model_choice": model_reason or "the live index's model",
            "dims": embedder.dims,
            "dagster/row_count": dg.MetadataValue.int(report.doc_count),
            "shadows": ", ".join(shadows),
            **{f"shadow_indexed/{name}": n["indexed"] for name, n in shadows.items()},
            **{f"shadow_deleted/{name}": n["deleted"] for name, n in shadows.items()},
            "shadow_errors": dg.MetadataValue.json(shadow_errors),
        }
    )


def _live_embedder(client, alias: str, models: ModelsResource):
    """The embedder of the live index's model (a reindex never switches the alias to another
    model: that is a shadow index's evaluation and promotion), else the configured one — when
    there is no index yet, or the live model is no longer loadable (then the sync rebuilds with
    the configured model, and the reason says so)."""
    live = live_model_id(client, alias)
    if live is None:
        return models.embedder(), ""
    try:
        return models.embedder_for(live), ""
    except UnknownEmbeddingModelError as exc:
        return models.embedder(), f"live model unavailable, using the configured model: {exc}"


@dg.asset_check(asset=search_index, blocking=True, description="ES docs == active chunks")
def index_count_matches_chunks(
    warehouse: WarehouseResource, elasticsearch: ElasticsearchResource
) -> dg.AssetCheckResult:
    client = elasticsearch.get_client()
    with warehouse.get_connection() as con:
        expected = len(active_chunk_ids(con))
    client.indices.refresh(index=elasticsearch.alias)
    actual = int(client.count(index=elasticsearch.alias)["count"])
    return dg.AssetCheckResult(
        passed=actual == expected,
        metadata={"index_count": actual, "active_chunks": expected, "diff": actual - expected},
    )


@dg.asset_check(asset=search_index, blocking=True, description="alias → one healthy index")
def alias_points_to_healthy_index(elasticsearch: ElasticsearchResource) -> dg.AssetCheckResult:
    client = elasticsearch.get_client()
    targets = alias_indices(client, elasticsearch.alias)
    status = "missing"
    if len(targets) == 1:
        status = str(client.cluster.health(index=targets[0], timeout="30s")["status"])
    return dg.AssetCheckResult(
        passed=len(targets) == 1 and status in {"green", "yellow"},
        metadata={"alias": elasticsearch.alias, "indices": ", ".join(targets), "health": status},
    )


@dg.asset_check(asset=search_index, blocking=True, description="mapping dims == model dims")
def vector_dims_match_model(
    models: ModelsResource, elasticsearch: ElasticsearchResource
) -> dg.AssetCheckResult:
    client = elasticsearch.get_client()
    mapped = mapped_vector_dims(client, elasticsearch.alias)
    meta_model = index_meta(client, elasticsearch.alias).get("model_id")
    # The model the index records is the one queries are embedded with (after a promotion: a
    # fine-tuned model, not the configured one): it must be loadable and match the mapping.
    try:
        embedder = models.embedder_for(str(meta_model))
    except UnknownEmbeddingModelError as exc:
        return dg.AssetCheckResult(
            passed=False, metadata={"index_model_id": str(meta_model), "error": str(exc)}
        )
    return dg.AssetCheckResult(
        passed=mapped == embedder.dims and meta_model == embedder.model_id,
        metadata={
            "mapped_dims": mapped,
            "model_dims": embedder.dims,
            "index_model_id": str(meta_model),
            "model_id": embedder.model_id,
        },
    )


INDEX_CHECKS = [index_count_matches_chunks, alias_points_to_healthy_index, vector_dims_match_model]
