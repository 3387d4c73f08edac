"""The code location: ``Definitions`` assembled from ``assets/`` and ``jobs/``.

Loaded by ``workspace.yaml`` (``dagster dev``) and by tests through ``build_definitions`` with
their own settings. This is where a code-location process starts, so the offline defaults are
applied here (before dlt, MLflow or DeepEval read them). Importing this module must stay cheap:
torch, transformers and deepeval are imported inside the assets that need them, never here.
"""

from __future__ import annotations

from llmops_dagster.config import Settings, apply_offline_env_defaults

apply_offline_env_defaults()

import dagster as dg  # noqa: E402

from llmops_dagster.resources import WarehouseResource, build_resources  # noqa: E402
from llmops_dagster.sources.source_config import (  # noqa: E402
    SourcesConfig,
    default_sources_config,
    load_sources_config,
)


def load_sources(settings: Settings) -> SourcesConfig:
    if settings.corpus.sources_config.is_file():
        return load_sources_config(settings.corpus.sources_config)
    return default_sources_config(settings.corpus.sample_data_dir)


def build_assets(
    settings: Settings, sources: SourcesConfig, warehouse: WarehouseResource | None = None
) -> list[dg.AssetsDefinition]:
    """Every asset. Definition-time choices (the dlt pipelines that describe the loaders, their
    pool and kinds) come from ``warehouse``, the warehouse resource the assets run with. When
    it is not given, or holds its URL only as an ``EnvVar`` (a password in it), the same
    resource is built from ``settings`` with the URL resolved: describing a PostgreSQL
    destination needs the URL itself."""
    from assets.chunks import chunks
    from assets.documents import build_documents_asset
    from assets.embedding_model import embedding_finetune
    from assets.embeddings import embeddings
    from assets.evaluate import champion_model, rag_evaluation
    from assets.golden import golden_candidates
    from assets.index import search_index
    from assets.ingest import build_ingest_assets
    from assets.judgments import serving_judgments
    from assets.model import finetune_dataset, lora_adapter
    from assets.serving import build_serving_load_assets, feedback_candidates, serving_metrics
    from assets.shadow import shadow_index

    if warehouse is None or isinstance(warehouse.url, dg.EnvVar):
        warehouse = WarehouseResource.from_settings(settings, resolve_secrets=True)
    target = warehouse.dlt_target()
    ingest = build_ingest_assets(sources, target, sources_file=str(settings.corpus.sources_config))
    ingest_keys = [key for assets_def in ingest for key in assets_def.keys]
    return [
        *ingest,
        build_documents_asset(sources, ingest_keys),
        chunks,
        embeddings,
        search_index,
        embedding_finetune,
        shadow_index,
        finetune_dataset,
        lora_adapter,
        rag_evaluation,
        champion_model,
        golden_candidates,
        build_serving_load_assets(target),
        serving_metrics,
        feedback_candidates,
        serving_judgments,
    ]


def build_asset_checks() -> list[dg.AssetChecksDefinition]:
    from assets.evaluate import EVALUATION_CHECKS
    from assets.index import INDEX_CHECKS
    from assets.serving import SERVING_CHECKS

    return [*INDEX_CHECKS, *EVALUATION_CHECKS, *SERVING_CHECKS]


def build_definitions(
    settings: Settings | None = None, sources: SourcesConfig | None = None
) -> dg.Definitions:
    from jobs import build_jobs

    settings = settings or Settings()
    sources = sources or load_sources(settings)
    resources = build_resources(settings)
    assets = build_assets(settings, sources, resources["warehouse"])
    jobs, schedules, sensors = build_jobs(
        reindex_cron=settings.schedules.reindex_cron,
        full_rebuild_cron=settings.schedules.full_rebuild_cron,
    )
    return dg.Definitions(
        assets=assets,
        asset_checks=build_asset_checks(),
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources=resources,
    )


defs = build_definitions()
