"""Faults against a real node that this test owns: Elasticsearch stops mid-bulk and mid-rebuild.

A dedicated node (not the session's) so that stopping it cannot disturb other tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from elasticsearch import Elasticsearch

from llmops_dagster.config import Settings
from llmops_dagster.embed.model import load_embedder
from llmops_dagster.search import sync as sync_module
from llmops_dagster.search.aliases import alias_indices, list_versions
from llmops_dagster.search.client import make_client
from llmops_dagster.search.sync import IndexSyncError, active_chunk_ids, sync_index
from llmops_dagster.services.elasticsearch_local import LocalNode, start_node, stop_node
from llmops_dagster.services.local import local_node
from llmops_dagster.sources.source_config import FilesystemSourceConfig, SourcesConfig
from tests.conftest import TEST_ES_PORT, THROWAWAY_STOP_S
from tests.support.dagster import PREPARE_GROUPS, materialize_groups
from tests.support.ports import free_node_port
from tests.support.settings import isolated_settings
from tests.support.warehouse import copy_embedding_cache

pytestmark = pytest.mark.integration

#: The node's HTTP port: LLMOPS_FAULT_ES_PORT, else a free one (several test sessions at once
#: each get their own); its folder is named after the session's node port.
FAULT_PORT = int(os.environ.get("LLMOPS_FAULT_ES_PORT", "0"))


@pytest.fixture(scope="module")
def fault_node(es_settings: Settings) -> Iterator[LocalNode]:
    base = Settings()
    node = local_node(
        base, node_dir=base.home / "elasticsearch" / f"fault-node-{TEST_ES_PORT}",
        port=FAULT_PORT or free_node_port(),
    )  # fmt: skip
    start_node(node)
    yield node
    stop_node(node, timeout=THROWAWAY_STOP_S)


@pytest.fixture(scope="module")
def prepared(
    tmp_path_factory: pytest.TempPathFactory, sample_dir: Path, sample_embeddings: Path
) -> Settings:
    """The sample corpus chunked and embedded once (ingest + prepare, no index)."""
    settings = isolated_settings(tmp_path_factory.mktemp("fault-home"))
    sources = SourcesConfig(filesystem=FilesystemSourceConfig(root=sample_dir))
    copy_embedding_cache(sample_embeddings, settings)
    materialize_groups(settings, sources, PREPARE_GROUPS)
    return settings


def _sync(client: Elasticsearch, settings: Settings, alias: str, mode: str):
    embedder = load_embedder(settings.models.embedding_model)
    with duckdb.connect(str(settings.duckdb_path)) as con:
        return sync_index(
            client, con, alias=alias, model_id=embedder.model_id, dims=embedder.dims,
            mode=mode, bulk_chunk_size=20,
        )  # fmt: skip


def _stop_after(node: LocalNode, n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the chunk stream stop the node after ``n`` documents: a crash in mid-bulk."""
    original = sync_module.iter_chunk_documents

    def stream(*args, **kwargs):
        for i, doc in enumerate(original(*args, **kwargs)):
            if i == n:
                stop_node(node)
            yield doc

    monkeypatch.setattr(sync_module, "iter_chunk_documents", stream)


def test_es_stopped_mid_bulk_then_rerun_ends_with_exact_counts(
    fault_node: LocalNode, prepared: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = prepared.override(elasticsearch={"url": fault_node.url})
    client = make_client(settings.cluster_spec(), request_timeout=5).options(max_retries=0)
    alias = f"fault-{uuid.uuid4().hex[:8]}"
    first = _sync(client, settings, alias, "rebuild")
    with duckdb.connect(str(settings.duckdb_path)) as con:
        expected = len(active_chunk_ids(con))
    assert first.doc_count == expected

    # The live index loses 60 documents, so the incremental run has a real bulk to send.
    ids = sorted(active_chunk_ids(duckdb.connect(str(settings.duckdb_path))))[:60]
    for chunk_id in ids:
        client.delete(index=alias, id=chunk_id, refresh=False)
    client.indices.refresh(index=alias)

    _stop_after(fault_node, 25, monkeypatch)
    with pytest.raises(IndexSyncError, match=rf"{fault_node.url}.*(unreachable|connection)"):
        _sync(client, settings, alias, "incremental")
    monkeypatch.undo()

    start_node(fault_node)
    client = make_client(settings.cluster_spec())
    rerun = _sync(client, settings, alias, "incremental")
    assert rerun.doc_count == expected
    assert rerun.indexed <= 60 and rerun.deleted == 0
    assert client.count(index=alias)["count"] == expected


def test_es_stopped_mid_rebuild_keeps_the_old_index_live(
    fault_node: LocalNode, prepared: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_node(fault_node)
    settings = prepared.override(elasticsearch={"url": fault_node.url})
    client = make_client(settings.cluster_spec(), request_timeout=5).options(max_retries=0)
    alias = f"fault-{uuid.uuid4().hex[:8]}"
    live = _sync(client, settings, alias, "rebuild").index

    _stop_after(fault_node, 40, monkeypatch)
    with pytest.raises(IndexSyncError):
        _sync(client, settings, alias, "rebuild")
    monkeypatch.undo()

    start_node(fault_node)
    client = make_client(settings.cluster_spec())
    assert alias_indices(client, alias) == [live]
    hits = client.search(index=alias, query={"match": {"text": "battery"}})
    assert hits["hits"]["total"]["value"] > 0
    # The half-built index could not delete itself with the node gone; the next rebuild's
    # pruning removes it and never keeps it as a rollback target.
    rebuilt = _sync(client, settings, alias, "rebuild")
    assert list_versions(client, alias) == sorted([live, rebuilt.index])
