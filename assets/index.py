"""The search index asset (reverse-ETL into Elasticsearch) and its blocking quality checks."""

import dagster as dg

from assets.ingest import WAREHOUSE_WRITERS_POOL
from llmops_dagster.resources import (
    ElasticsearchResource,
    MlflowResource,
    ModelsResource,
    WarehouseResource,
)
from llmops_dagster.search.aliases import alias_indices
from llmops_dagster.search.mapping import index_meta, mapped_vector_dims
from llmops_dagster.search.sync import active_chunk_ids, sync_index


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
    embedder = models.embedder()
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
            "dims": embedder.dims,
            "dagster/row_count": dg.MetadataValue.int(report.doc_count),
        }
    )


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
    embedder = models.embedder()
    mapped = mapped_vector_dims(client, elasticsearch.alias)
    meta_model = index_meta(client, elasticsearch.alias).get("model_id")
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
