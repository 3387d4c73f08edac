"""The search index asset against the real node: incremental sync, rebuild + swap, checks."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
from elasticsearch import Elasticsearch

from llmops_dagster.config import Settings
from llmops_dagster.search.aliases import alias_indices, list_versions, rollback
from llmops_dagster.sources.source_config import FilesystemSourceConfig, SourcesConfig
from tests.conftest import asset_metadata, drop_indices
from tests.support.dagster import materialize_groups
from tests.support.warehouse import copy_embedding_cache

pytestmark = pytest.mark.integration

REBUILD = {"ops": {"search_index": {"config": {"full_rebuild": True}}}}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {c.check_name: c.passed for c in result.get_asset_check_evaluations()}


@pytest.fixture
def setup(
    tmp_settings: Settings,
    es_settings: Settings,
    sample_dir: Path,
    sample_embeddings: Path,
    tmp_path: Path,
):
    alias = f"test-{uuid.uuid4().hex[:8]}"
    settings = tmp_settings.override(
        elasticsearch={"url": es_settings.elasticsearch.url, "index_alias": alias}
    )
    copy_embedding_cache(sample_embeddings, settings)
    corpus = tmp_path / "corpus"
    shutil.copytree(sample_dir, corpus)
    sources = SourcesConfig(filesystem=FilesystemSourceConfig(root=corpus))
    yield settings, sources, corpus
    drop_indices(Elasticsearch(es_settings.es_url), alias)


def test_incremental_then_rebuild_then_rollback(setup, es_client: Elasticsearch) -> None:
    settings, sources, corpus = setup
    alias = settings.elasticsearch.index_alias

    first = materialize_groups(settings, sources)
    index1 = asset_metadata(first, "search_index")
    n_chunks = asset_metadata(first, "chunks")["active_chunks"]
    assert index1["mode"] == "rebuild"  # no alias yet → first build
    assert index1["doc_count"] == index1["chunk_count"] == n_chunks
    assert _checks(first) == {
        "index_count_matches_chunks": True,
        "alias_points_to_healthy_index": True,
        "vector_dims_match_model": True,
    }
    live1 = alias_indices(es_client, alias)
    assert live1 == [index1["index"]]
    _assert_lineage_chain(settings, first)

    # Unchanged: incremental, nothing written.
    second = asset_metadata(materialize_groups(settings, sources), "search_index")
    assert (second["mode"], second["indexed"], second["deleted"]) == ("incremental", 0, 0)
    assert second["unchanged"] == n_chunks

    # One changed file and one deleted file: exactly their chunks move.
    target = corpus / "runbooks" / "lost-link.txt"
    target.write_text(target.read_text() + "\n\nAfter recovery, file an incident in Roost.\n")
    later = time.time() + 5
    os.utime(target, (later, later))
    (corpus / "policies" / "travel.html").unlink()
    third = materialize_groups(settings, sources)
    chunks3 = asset_metadata(third, "chunks")
    index3 = asset_metadata(third, "search_index")
    assert index3["mode"] == "incremental"
    assert index3["indexed"] == chunks3["chunks_added"] >= 1
    assert index3["deleted"] == chunks3["chunks_removed"] >= 1
    assert index3["doc_count"] == chunks3["active_chunks"]
    assert all(_checks(third).values())
    hits = es_client.search(index=alias, query={"term": {"doc_id": "fs:policies/travel.html"}})
    assert hits["hits"]["total"]["value"] == 0

    # Full rebuild: a new physical index, alias swapped, the old one kept for rollback.
    fourth = materialize_groups(settings, sources, run_config=REBUILD)
    index4 = asset_metadata(fourth, "search_index")
    assert index4["mode"] == "rebuild"
    assert index4["previous_index"] == index1["index"]
    assert alias_indices(es_client, alias) == [index4["index"]]
    assert list_versions(es_client, alias) == sorted([index1["index"], index4["index"]])
    assert es_client.count(index=alias)["count"] == chunks3["active_chunks"]
    assert all(_checks(fourth).values())

    assert rollback(es_client, alias) == index1["index"]
    assert alias_indices(es_client, alias) == [index1["index"]]


def _assert_lineage_chain(settings: Settings, result: dg.ExecuteInProcessResult) -> None:
    """Each materialization has an MLflow run whose upstream tag names the upstream's run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(settings.mlflow_uri)
    runs = {
        a: asset_metadata(result, a)["mlflow_run_id"] for a in ("documents", "chunks", "embeddings")
    }
    runs["search_index"] = asset_metadata(result, "search_index")["mlflow_run_id"]
    runs["fs/files"] = asset_metadata(result, "fs/files")["mlflow_run_id"]
    chain = [
        ("search_index", "embeddings"),
        ("embeddings", "chunks"),
        ("chunks", "documents"),
        ("documents", "fs/files"),
    ]
    for asset, upstream in chain:
        tags = client.get_run(runs[asset]).data.tags
        assert tags[f"upstream.{upstream}"] == runs[upstream]
        assert tags["dagster.run_id"] == result.run_id
        assert tags["dagster.asset_key"] == asset
        assert len(tags["code.version"]) >= 40
    index_tags = client.get_run(runs["search_index"]).data.tags
    chunk_tags = client.get_run(runs["chunks"]).data.tags
    assert index_tags["chunk_set.digest"] == chunk_tags["chunk_set.digest"]
    assert index_tags["index.name"] == asset_metadata(result, "search_index")["index"]
    documents_run = client.get_run(runs["documents"])
    assert "fs_files" in documents_run.data.tags["dlt.load_ids"]
    (dataset_input,) = documents_run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "documents"
