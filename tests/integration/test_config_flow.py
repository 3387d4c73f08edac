"""Configuration flows one way: a value given to ``build_definitions`` (or set on a resource)
is the value the code uses at run time — nothing re-reads the environment behind it."""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
import pytest
from elasticsearch import Elasticsearch
from mlflow.tracking import MlflowClient

from llmops_dagster.config import Settings
from llmops_dagster.definitions import build_definitions
from llmops_dagster.resources import ModelsResource, build_resources
from llmops_dagster.search.aliases import alias_indices
from llmops_dagster.sources.source_config import FilesystemSourceConfig, SourcesConfig
from tests.conftest import asset_metadata, drop_indices
from tests.support.warehouse import copy_embedding_cache

pytestmark = pytest.mark.integration


def test_alias_and_experiment_given_to_build_definitions_reach_the_run(
    tmp_settings: Settings,
    es_settings: Settings,
    es_client: Elasticsearch,
    sample_dir: Path,
    sample_embeddings: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alias = f"flow-{uuid.uuid4().hex[:8]}"
    # The environment says otherwise: only the values passed in may be used.
    monkeypatch.setenv("LLMOPS_ES_INDEX_ALIAS", "from-the-environment")
    monkeypatch.setenv("LLMOPS_MLFLOW_EXPERIMENT", "from-the-environment")
    settings = tmp_settings.override(
        elasticsearch={"url": es_settings.elasticsearch.url, "index_alias": alias},
        mlflow={"experiment": "flow-experiment"},
    )
    copy_embedding_cache(sample_embeddings, settings)
    sources = SourcesConfig(filesystem=FilesystemSourceConfig(root=sample_dir))
    defs = build_definitions(settings, sources)
    job = defs.resolve_implicit_global_asset_job_def()
    selection = dg.AssetSelection.groups("ingest", "prepare", "index").resolve(
        defs.resolve_asset_graph()
    )
    try:
        result = job.execute_in_process(
            instance=dg.DagsterInstance.ephemeral(), asset_selection=list(selection)
        )
        assert result.success
        index = asset_metadata(result, "search_index")
        assert index["alias"] == alias
        assert alias_indices(es_client, alias) == [index["index"]]
        assert not es_client.indices.exists_alias(name="from-the-environment")

        client = MlflowClient(settings.mlflow_uri)
        experiment = client.get_experiment_by_name("flow-experiment")
        assert experiment is not None
        assert client.get_experiment_by_name("from-the-environment") is None
        runs = client.search_runs([experiment.experiment_id])
        assert sorted(r.data.tags["dagster.asset_key"] for r in runs) == [
            "chunks",
            "documents",
            "embeddings",
            "ingest_fs",
            "search_index",
        ]
        assert index["mlflow_run_id"] in {r.info.run_id for r in runs}
    finally:
        drop_indices(es_client, alias)


def test_torch_threads_on_the_models_resource_reach_the_generator() -> None:
    import torch

    fields = build_resources(Settings(), with_dlt=False)["models"].model_dump()
    for threads in (1, 2):
        models = ModelsResource(**{**fields, "torch_threads": threads})
        assert models.local_model_spec().threads == threads
        loaded = models.base_model()
        assert loaded.model is not None
        assert torch.get_num_threads() == threads
    torch.set_num_threads(1)
