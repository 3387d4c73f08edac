"""Shared fixtures: one real Elasticsearch node per test session, temp MLflow and DuckDB stores.

PostgreSQL: one throw-away cluster per session as well (the ``postgres`` fixture).
Integration tests never skip for a missing service: if the node cannot start, they fail with the
reason. Set ELASTICSEARCH_URL to run them against an existing cluster instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops_dagster.config import Settings, apply_offline_env_defaults

# The test session is where this process starts: offline defaults before any heavy import.
apply_offline_env_defaults()

TEST_ES_PORT = int(os.environ.get("LLMOPS_TEST_ES_PORT", "9250"))


@pytest.fixture(scope="session")
def es_settings() -> Iterator[Settings]:
    """Settings pointing at a healthy cluster: ELASTICSEARCH_URL, or a node started for tests."""
    base = Settings()
    if base.uses_external_es:
        from llmops_dagster.search.client import check_cluster, make_client

        check_cluster(make_client(base.cluster_spec()), base.cluster_spec())
        yield base
        return

    from llmops_dagster.services.elasticsearch_local import (
        ElasticsearchSetupError,
        fetch_distribution,
        start_node,
        stop_node,
    )
    from llmops_dagster.services.local import local_node

    # Under LLMOPS_HOME, not pytest's tmp dir: when we run as root the node runs as a system
    # user, which cannot enter root's private (0700) pytest temp folders.
    node_dir = base.home / "elasticsearch" / f"test-node-{TEST_ES_PORT}"
    try:
        fetch_distribution(base.es_dist_dir, base.local_node.version)
        # After the fetch: as root, local_node may relocate the node to a folder the
        # unprivileged Elasticsearch user can reach, copying the distribution there.
        node = local_node(base, node_dir=node_dir, port=TEST_ES_PORT)
        shutil.rmtree(node.node_dir / "data", ignore_errors=True)
        start_node(node)
    except ElasticsearchSetupError as exc:
        pytest.fail(f"could not start the test Elasticsearch node: {exc}", pytrace=False)
    settings = base.override(elasticsearch={"url": node.url})
    try:
        yield settings
    finally:
        stop_node(node)


@pytest.fixture(scope="session")
def es_client(es_settings: Settings):
    from llmops_dagster.search.client import make_client

    client = make_client(es_settings.cluster_spec())
    yield client
    client.close()


@pytest.fixture
def tmp_settings(tmp_path: Path) -> Settings:
    """Settings whose stores (DuckDB, MLflow, dlt state, caches) all live in a temp folder."""
    home = tmp_path / "llmops-home"
    home.mkdir()
    return Settings().override(
        home=home,
        warehouse={"duckdb_path": home / "warehouse.duckdb"},
        mlflow={"tracking_uri": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"},
        # The project's model cache: the GGUF → safetensors conversion (~40 s) happens once.
        models={"cache_dir": Settings().models_cache_dir},
    )


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    path = Settings().corpus.sample_data_dir
    assert path.is_dir(), f"sample corpus missing at {path}"
    return path


def drop_indices(client, alias: str) -> None:
    """Delete every versioned index of ``alias`` by name: clusters refuse wildcard deletes by
    default (``action.destructive_requires_name``)."""
    from llmops_dagster.search.aliases import list_versions

    for name in list_versions(client, alias):
        client.indices.delete(index=name, ignore_unavailable=True)


def asset_metadata(result, asset: str) -> dict:
    """Metadata values of the one materialization of ``asset`` (by user string) in a run."""
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == asset
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture(scope="session")
def postgres() -> Iterator:
    """One throw-away PostgreSQL cluster per test session (Debian's binaries, initdb + pg_ctl
    on a free loopback port). Tests create their own databases with ``create_database``."""
    from llmops_dagster.services.postgres_local import (
        PostgresSetupError,
        start_postgres,
        stop_postgres,
    )

    base = Settings()
    data_dir = base.home / "postgres" / f"test-cluster-{os.getpid()}"
    shutil.rmtree(data_dir, ignore_errors=True)
    try:
        pg = start_postgres(data_dir)
    except PostgresSetupError as exc:
        pytest.fail(f"could not start the test PostgreSQL cluster: {exc}", pytrace=False)
    try:
        yield pg
    finally:
        stop_postgres(pg)
        shutil.rmtree(pg.data_dir, ignore_errors=True)
