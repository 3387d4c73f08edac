"""The code location: ``Definitions`` assembled from ``assets/`` and ``jobs/``.

Loaded by ``workspace.yaml`` (``dagster dev``) and by tests through ``build_definitions`` with
their own settings. Importing this module must stay cheap: torch, transformers and deepeval are
imported inside the assets that need them, never here.
"""

from __future__ import annotations

import dagster as dg
from dagster_dlt import DagsterDltResource

from llmops_dagster.config import Settings, get_settings
from llmops_dagster.resources import ElasticsearchResource, LlmopsSettingsResource, MlflowResource
from llmops_dagster.sources.source_config import (
    SourcesConfig,
    default_sources_config,
    load_sources_config,
)


def load_sources(settings: Settings) -> SourcesConfig:
    if settings.sources_config.is_file():
        return load_sources_config(settings.sources_config)
    return default_sources_config(settings.sample_data_dir)


def build_assets(settings: Settings, sources: SourcesConfig) -> list[dg.AssetsDefinition]:
    from assets.chunks import chunks
    from assets.documents import build_documents_asset
    from assets.embeddings import embeddings
    from assets.evaluate import champion_model, rag_evaluation
    from assets.index import search_index
    from assets.ingest import build_ingest_assets
    from assets.model import finetune_dataset, lora_adapter

    ingest = build_ingest_assets(settings, sources)
    ingest_keys = [key for assets_def in ingest for key in assets_def.keys]
    return [
        *ingest,
        build_documents_asset(sources, ingest_keys),
        chunks,
        embeddings,
        search_index,
        finetune_dataset,
        lora_adapter,
        rag_evaluation,
        champion_model,
    ]


def build_asset_checks() -> list[dg.AssetChecksDefinition]:
    from assets.evaluate import EVALUATION_CHECKS
    from assets.index import INDEX_CHECKS

    return [*INDEX_CHECKS, *EVALUATION_CHECKS]


def build_resources(settings: Settings) -> dict[str, object]:
    return {
        "dlt": DagsterDltResource(),
        "llmops": LlmopsSettingsResource(
            llmops_home=str(settings.llmops_home),
            duckdb_path=str(settings.effective_duckdb_path),
            embedding_model=settings.embedding_model,
        ),
        "elasticsearch": ElasticsearchResource(
            url=settings.elasticsearch_url,
            # Secrets stay env references: never resolved into run config or the UI.
            api_key=dg.EnvVar("ELASTICSEARCH_API_KEY") if settings.elasticsearch_api_key else None,
            password=dg.EnvVar("ELASTICSEARCH_PASSWORD")
            if settings.elasticsearch_password
            else None,
            username=settings.elasticsearch_username,
            ca_certs=str(settings.elasticsearch_ca_certs)
            if settings.elasticsearch_ca_certs
            else None,
            index_alias=settings.es_index_alias,
        ),
        "mlflow": MlflowResource(
            tracking_uri=settings.effective_mlflow_uri, experiment=settings.mlflow_experiment
        ),
    }


def build_definitions(
    settings: Settings | None = None, sources: SourcesConfig | None = None
) -> dg.Definitions:
    from jobs import build_jobs

    settings = settings or get_settings()
    sources = sources or load_sources(settings)
    assets = build_assets(settings, sources)
    jobs, schedules, sensors = build_jobs()
    return dg.Definitions(
        assets=assets,
        asset_checks=build_asset_checks(),
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources=build_resources(settings),
    )


defs = build_definitions()
