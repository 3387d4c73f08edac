"""The whole graph on the sample corpus, through the fine-tune: a registered, traceable adapter."""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
import pytest
from elasticsearch import Elasticsearch
from mlflow.tracking import MlflowClient

from llmops_dagster.config import Settings
from llmops_dagster.definitions import build_asset_checks, build_assets, build_resources
from llmops_dagster.sources.source_config import FilesystemSourceConfig, SourcesConfig
from llmops_dagster.tracking.trace import trace

pytestmark = pytest.mark.integration

SHORT_TRAINING = {
    "ops": {"lora_adapter": {"config": {"max_steps": 2, "batch_size": 2, "max_seq_len": 256}}}
}


def _meta(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == asset
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_lora_adapter_is_registered_with_its_lineage(
    tmp_settings: Settings, es_settings: Settings, sample_dir: Path
) -> None:
    alias = f"model-{uuid.uuid4().hex[:8]}"
    settings = tmp_settings.model_copy(
        update={
            "elasticsearch_url": es_settings.elasticsearch_url,
            "es_index_alias": alias,
            "torch_threads": 1,
        }
    )
    sources = SourcesConfig(filesystem=FilesystemSourceConfig(root=sample_dir))
    try:
        result = dg.materialize(
            [*build_assets(settings, sources), *build_asset_checks()],
            resources=build_resources(settings),
            instance=dg.DagsterInstance.ephemeral(),
            run_config=SHORT_TRAINING,
        )
        assert result.success
        dataset = _meta(result, "finetune_dataset")
        adapter = _meta(result, "lora_adapter")
        index = _meta(result, "search_index")
        assert dataset["n_train"] + dataset["n_validation"] == 60
        assert adapter["steps"] == 2
        assert adapter["dataset_digest"] == dataset["digest"]
        assert adapter["index_version"] == index["index"]

        client = MlflowClient(settings.effective_mlflow_uri)
        version = client.get_model_version(settings.lora_model_name, adapter["model_version"])
        assert version.tags["llmops.dataset_digest"] == dataset["digest"]
        assert version.tags["llmops.index_version"] == index["index"]
        assert version.run_id == adapter["mlflow_run_id"]
        run_tags = client.get_run(version.run_id).data.tags
        assert run_tags["upstream.finetune_dataset"] == dataset["mlflow_run_id"]
        assert run_tags["dagster.run_id"] == result.run_id
        # Training registers a version but never promotes it.
        assert client.get_registered_model(settings.lora_model_name).aliases == {}

        # The registered version traces back, link by link, to the dlt loads and the code.
        chain = trace(client, f"models:/{settings.lora_model_name}/{adapter['model_version']}")
        assert chain.complete
        nodes = chain.by_asset()
        assert set(nodes) == {
            "lora_adapter",
            "finetune_dataset",
            "search_index",
            "embeddings",
            "chunks",
            "documents",
        }
        assert nodes["search_index"].facts["index.name"] == index["index"]
        assert (
            nodes["search_index"].facts["chunk_set.digest"]
            == nodes["chunks"].facts["chunk_set.digest"]
        )
        assert "fs_files" in nodes["documents"].facts["dlt.load_ids"]
        assert {n.code_version for n in chain.nodes} == {nodes["documents"].code_version}
    finally:
        Elasticsearch(str(settings.elasticsearch_url)).indices.delete(
            index=f"{alias}-*", ignore_unavailable=True
        )
