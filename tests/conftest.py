"""Shared fixtures: one real Elasticsearch node per test session, temp MLflow and DuckDB stores.

PostgreSQL: one throw-away cluster per session as well (the ``postgres`` fixture), and the
``warehouse`` fixture runs a test on both warehouse engines. Integration tests never skip for a
missing service: if the node cannot start, they fail with the reason. Set ELASTICSEARCH_URL to
run them against an existing cluster instead. Unit tests start no service (tests/support/tiers.py
enforces it); helpers that are not fixtures live in tests/support/.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops_dagster.config import Settings, apply_offline_env_defaults
from tests.support.tiers import apply_tiers, refuse_service_in_unit_test, running

# The test session is where this process starts: offline defaults before any heavy import.
apply_offline_env_defaults()
# The suite's expectations of the real model's greedy output are float32's (the default): a
# developer's LLMOPS_GENERATOR_PRECISION=auto would pick bfloat16 on a CPU with AVX-512 BF16 and
# change them. The generator-pin tests (unit and integration) cover bfloat16 and auto explicitly.
os.environ["LLMOPS_GENERATOR_PRECISION"] = "float32"

TEST_ES_PORT = int(os.environ.get("LLMOPS_TEST_ES_PORT", "9250"))
#: How long a test's own throw-away node gets to shut down before it is killed: in the full
#: suite such nodes sat out the whole 60 s graceful window (three modules, a minute each) though
#: nothing they hold needs to survive the test.
THROWAWAY_STOP_S = 10.0


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: it reads the marks this settles
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    apply_tiers(items)


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures are set up
def pytest_runtest_setup(item: pytest.Item) -> None:
    running(item)


@pytest.fixture(scope="session")
def es_settings() -> Iterator[Settings]:
    """Settings pointing at a healthy cluster: ELASTICSEARCH_URL, or a node started for tests."""
    refuse_service_in_unit_test("Elasticsearch")
    base = Settings()
    if base.uses_external_es:
        from llmops_dagster.resources import ElasticsearchResource
        from llmops_dagster.search.client import check_cluster, make_client

        spec = ElasticsearchResource.from_settings(base, resolve_secrets=True).cluster_spec()
        check_cluster(make_client(spec), spec)
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
    from llmops_dagster.resources import ElasticsearchResource
    from llmops_dagster.search.client import make_client

    resource = ElasticsearchResource.from_settings(es_settings, resolve_secrets=True)
    client = make_client(resource.cluster_spec())
    yield client
    client.close()


@pytest.fixture
def tmp_settings(tmp_path: Path) -> Settings:
    """Settings whose stores (DuckDB, MLflow, dlt state, caches) all live in a temp folder; the
    project's model cache stays (the GGUF → safetensors conversion, ~40 s, happens once)."""
    from tests.support.settings import isolated_settings

    return isolated_settings(tmp_path / "llmops-home")


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    path = Settings().corpus.sample_data_dir
    assert path.is_dir(), f"sample corpus missing at {path}"
    return path


@pytest.fixture(scope="session")
def sample_embeddings(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    """A DuckDB warehouse holding the sample corpus's embedding cache, built once per session
    (ingest + prepare of the demo's sources). A test that indexes the whole sample corpus, and
    asserts nothing about embedding it, copies it into its fresh warehouse first
    (``tests.support.warehouse.copy_embedding_cache``): the same 219 chunks are embedded once
    per session instead of once per module."""
    from llmops_dagster.sources.source_config import default_sources_config
    from tests.support.dagster import PREPARE_GROUPS, materialize_groups
    from tests.support.settings import isolated_settings

    settings = isolated_settings(tmp_path_factory.mktemp("sample-embeddings"))
    materialize_groups(settings, default_sources_config(sample_dir), PREPARE_GROUPS)
    return settings.duckdb_path


def drop_indices(client, alias: str) -> None:
    """Delete every versioned index of ``alias``, and whatever it points at, by name: clusters
    refuse wildcard deletes by default (``action.destructive_requires_name``)."""
    from llmops_dagster.search.aliases import alias_indices, list_versions

    for name in sorted(set(list_versions(client, alias)) | set(alias_indices(client, alias))):
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
    refuse_service_in_unit_test("PostgreSQL")
    from llmops_dagster.services.postgres_local import (
        PostgresSetupError,
        start_postgres,
        stop_postgres,
    )

    base = Settings()
    data_dir = base.home / "postgres" / f"test-cluster-{os.getpid()}"
    shutil.rmtree(data_dir, ignore_errors=True)
    try:
        pg = start_postgres(data_dir, bin_dir=base.local_postgres.bin_dir)
    except PostgresSetupError as exc:
        pytest.fail(f"could not start the test PostgreSQL cluster: {exc}", pytrace=False)
    try:
        yield pg
    finally:
        stop_postgres(pg)
        shutil.rmtree(pg.data_dir, ignore_errors=True)


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.integration)])
def warehouse(request: pytest.FixtureRequest) -> Iterator:
    """The same test on both warehouse engines, through the warehouse adapter: an in-memory
    DuckDB (a unit test) and a fresh database on the session's throw-away PostgreSQL cluster
    (an integration test: ``-m unit`` leaves that variant out and starts no PostgreSQL)."""
    if request.param == "duckdb":
        import duckdb

        from llmops_dagster.warehouse import as_warehouse

        found = as_warehouse(duckdb.connect(":memory:"))
    else:
        import uuid

        from llmops_dagster.services.postgres_local import create_database
        from llmops_dagster.warehouse.postgres import open_postgres

        pg = request.getfixturevalue("postgres")
        name = f"test_{uuid.uuid4().hex[:12]}"
        create_database(pg, name)
        found = open_postgres(pg.url(name))
    try:
        yield found
    finally:
        found.close()
