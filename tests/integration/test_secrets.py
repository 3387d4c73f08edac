"""Secrets come from the environment only and never reach logs, Dagster metadata or MLflow.

The local test node runs without security, so it ignores the API key; what this test checks is
our side: the key is sent through ``EnvVar`` and written nowhere.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import dagster as dg
import pytest
from elasticsearch import Elasticsearch

from llmops_dagster.config import Settings
from llmops_dagster.definitions import build_resources
from llmops_dagster.sources.source_config import FilesystemSourceConfig, SourcesConfig
from tests.conftest import drop_indices
from tests.support.dagster import materialize_groups
from tests.support.warehouse import copy_embedding_cache

pytestmark = pytest.mark.integration

SECRET = "llmops-test-secret-" + uuid.uuid4().hex


def _files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(path) for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_api_key_never_lands_in_logs_metadata_or_mlflow(
    tmp_settings: Settings,
    es_settings: Settings,
    es_client: Elasticsearch,
    sample_dir: Path,
    sample_embeddings: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ELASTICSEARCH_API_KEY", SECRET)
    alias = f"secret-{uuid.uuid4().hex[:8]}"
    settings = tmp_settings.override(
        elasticsearch={
            "url": es_settings.elasticsearch.url,
            "index_alias": alias,
            "api_key": Settings().elasticsearch.api_key,
        }
    )
    assert settings.elasticsearch.api_key is not None
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    copy_embedding_cache(sample_embeddings, settings)

    resources = build_resources(settings)
    # The resource holds an env reference, not the value: run config and the UI show the name.
    assert isinstance(resources["elasticsearch"].api_key, dg.EnvVar)

    home = tmp_path / "dagster_home"
    home.mkdir()
    caplog.set_level(logging.DEBUG)
    sources = SourcesConfig(filesystem=FilesystemSourceConfig(root=sample_dir))
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            result = materialize_groups(settings, sources, resources=resources, instance=instance)
            for event in instance.all_logs(result.run_id):
                assert SECRET not in str(event)
        for event in result.all_events:
            assert SECRET not in str(event)
        out, err = capfd.readouterr()
        assert SECRET not in out and SECRET not in err
        assert SECRET not in caplog.text
        assert _files_containing(home, SECRET.encode()) == []  # Dagster run/event storage
        assert _files_containing(settings.home, SECRET.encode()) == []  # MLflow, DuckDB
    finally:
        drop_indices(es_client, alias)
