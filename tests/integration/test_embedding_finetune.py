"""The embedding_finetune asset on the sample corpus indexed in a real Elasticsearch node (with
``hard_negative`` on, its BM25 gives the hard negatives, searched as the training audience; the
default, without, is the shadow-index job's in test_shadow_index.py), trained for two tiny
steps, logged and registered in a SQLite MLflow: the registered version carries the contract's
tags, the folder loads under the output's model id, and the same data + recipe reuse folder and
version.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import dagster as dg
import pytest
from elasticsearch import Elasticsearch
from mlflow.tracking import MlflowClient

from llmops_dagster.config import Settings
from llmops_dagster.definitions import build_asset_checks, build_assets, build_resources
from llmops_dagster.embed.finetune import FinetunedEmbedding
from llmops_dagster.embed.model import canonical_model_id, load_embedder
from llmops_dagster.sources.source_config import default_sources_config
from tests.conftest import asset_metadata, drop_indices
from tests.support.dagster import materialize_groups
from tests.support.warehouse import copy_embedding_cache

pytestmark = pytest.mark.integration

TINY = {
    "ops": {
        "embedding_finetune": {
            "config": {"max_steps": 2, "batch_size": 4, "max_pairs": 16, "hard_negative": True}
        }
    }
}


def test_embedding_finetune_registers_a_loadable_model_and_reuses_it(
    tmp_settings: Settings,
    es_settings: Settings,
    es_client: Elasticsearch,
    sample_dir: Path,
    sample_embeddings: Path,
    tmp_path: Path,
) -> None:
    alias = f"embft-{uuid.uuid4().hex[:8]}"
    settings = tmp_settings.override(
        elasticsearch={"url": es_settings.elasticsearch.url, "index_alias": alias},
        # A models cache of its own: the first run must train, not find an earlier session's.
        models={"cache_dir": tmp_path / "models"},
    )
    copy_embedding_cache(sample_embeddings, settings)
    sources = default_sources_config(sample_dir)  # with the confidential folders' audiences
    instance = dg.DagsterInstance.ephemeral()
    try:
        materialize_groups(settings, sources, instance=instance)
        assets = [*build_assets(settings, sources), *build_asset_checks()]

        def finetune() -> dg.ExecuteInProcessResult:
            result = dg.materialize(
                assets,
                selection=dg.AssetSelection.assets("embedding_finetune"),
                resources=build_resources(settings),
                instance=instance,
                run_config=TINY,
            )
            assert result.success
            return result

        first = finetune()
        value = first.output_for_node("embedding_finetune")
        meta = asset_metadata(first, "embedding_finetune")
        again = finetune()
        second = again.output_for_node("embedding_finetune")
        meta_again = asset_metadata(again, "embedding_finetune")
    finally:
        drop_indices(es_client, alias)

    assert isinstance(value, FinetunedEmbedding)
    name = settings.models.embedding_ft_model_name
    assert (value.registered_name, value.version, value.examples, value.steps) == (name, "1", 16, 2)
    # 219 chunks, 20 confidential; 195 public ones give a triple (the index's BM25, searched as
    # the public training audience, finds a hard negative in another document for each).
    assert (meta["n_pairs"], meta["n_candidates"], meta["n_chunks_seen"]) == (16, 195, 219)
    assert (meta["n_chunks_dropped_audience"], meta["n_dropped_golden"]) == (20, 44)
    assert (meta["n_dropped_no_negative"], meta["steps"], meta["reused"]) == (0, 2, False)
    assert meta["examples_seen"] == 8 and meta["train_seconds"] > 0
    assert isinstance(meta["final_loss"], float)

    # The folder: under the models cache, named by base + digest, loads with the output's id.
    folder = Path(value.path)
    assert folder.parent == tmp_path / "models" / "embedding"
    assert folder.name.startswith(f"{value.base_model_id.split('@')[0]}-ft-")
    assert canonical_model_id(str(folder)) == value.model_id
    embedder = load_embedder(str(folder))
    assert embedder.model_id == value.model_id and embedder.dims == 384
    assert value.model_id != value.base_model_id

    # The registered version and its tags (the contract the shadow index reads).
    client = MlflowClient(settings.mlflow_uri)
    version = client.get_model_version(name, value.version)
    recipe = json.loads(version.tags["recipe"])
    assert {k: version.tags[k] for k in version.tags if k != "recipe"} == {
        "embedding.model_id": value.model_id,
        "embedding.base_model_id": value.base_model_id,
        "data.digest": value.data_digest,
        "examples": "16",
        "steps": "2",
    }
    assert (recipe["max_steps"], recipe["batch_size"], recipe["loss"]) == (
        2,
        4,
        "MultipleNegativesRankingLoss",
    )
    assert recipe["hard_negative"] is True
    assert version.run_id == value.run_id
    assert version.source.endswith("/embedding_model")
    run = client.get_run(value.run_id)
    assert run.data.tags["data.digest"] == value.data_digest
    assert run.data.metrics["n_pairs"] == 16
    artifacts = {a.path for a in client.list_artifacts(value.run_id)}
    assert {"pairs_sample.json", "embedding_model"} <= artifacts

    # Same data + recipe: the folder and its registered version are reused, nothing retrained.
    assert meta_again["reused"] is True
    assert (second.model_id, second.path, second.version) == (value.model_id, value.path, "1")
    assert second.data_digest == value.data_digest and second.run_id != value.run_id
    assert len(client.search_model_versions(f"name='{name}'")) == 1
