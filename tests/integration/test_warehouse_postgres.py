"""The pipeline's own tables on PostgreSQL: the same asset graph, the same results as DuckDB.

One sample corpus goes through ingest → documents → chunks → embeddings → index twice, once per
warehouse (each with its own alias), and both must agree exactly: document ids and hashes, chunk
ids, counts, digests and what Elasticsearch holds (ids + sync keys). The embedding cache is
copied from the DuckDB run into PostgreSQL through the adapter (the model is the slow part and
is not what is compared); the incremental run on PostgreSQL then embeds its new chunks itself.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
from elasticsearch import Elasticsearch

from llmops_dagster.config import PROJECT_ROOT, Settings
from llmops_dagster.search.sync import active_chunk_sync_keys, live_chunk_sync_keys
from llmops_dagster.services.postgres_local import create_database, free_port
from llmops_dagster.sources.source_config import FilesystemSourceConfig, SourcesConfig
from llmops_dagster.tracking.mlflow_store import ensure_mlflow
from llmops_dagster.warehouse import connect_warehouse
from llmops_dagster.warehouse.postgres import connect_postgres
from tests.conftest import asset_metadata, drop_indices
from tests.support.dagster import (
    dagster_home,
    faq_database,
    materialize_groups,
    materialize_in_subprocesses,
)
from tests.support.tracking import sqlite_store
from tests.support.warehouse import copy_embedding_cache

pytestmark = pytest.mark.integration

SAMPLE_DOCS = 51  # 47 public sample documents + 4 confidential
SAMPLE_CHUNKS = 219


def _tables(settings: Settings) -> dict[str, object]:
    with connect_warehouse(
        url=settings.warehouse.url, duckdb_path=settings.duckdb_path, read_only=True
    ) as con:
        docs = con.fetchall("SELECT doc_id, content_hash, allowed_groups FROM llmops.documents")
        chunks = con.fetchall(
            "SELECT chunk_id, doc_id, content_hash FROM llmops.chunks WHERE status = 'active'"
        )
        removed = con.fetchall("SELECT chunk_id FROM llmops.chunks WHERE status = 'removed'")
        keys = active_chunk_sync_keys(con)
    return {
        "docs": sorted((d, h, tuple(g)) for d, h, g in docs),
        "chunks": sorted(chunks),
        "removed": sorted(r[0] for r in removed),
        "keys": keys,
    }


def _pg_settings(base: Settings, home: Path, url: str, alias: str) -> Settings:
    home.mkdir(parents=True, exist_ok=True)
    return base.override(
        home=home,
        warehouse={"url": url, "duckdb_path": home / "unused.duckdb"},
        elasticsearch={"index_alias": alias},
    )


@pytest.fixture
def world(tmp_path: Path, tmp_settings: Settings, es_settings: Settings, postgres, sample_dir):
    corpus = tmp_path / "corpus"
    shutil.copytree(sample_dir, corpus)
    suffix = uuid.uuid4().hex[:8]
    duck = tmp_settings.override(
        elasticsearch={"url": es_settings.elasticsearch.url, "index_alias": f"wh-duck-{suffix}"}
    )
    database = f"wh_{suffix}"
    create_database(postgres, database)
    pg = _pg_settings(duck, tmp_path / "pg-home", postgres.url(database), f"wh-pg-{suffix}")
    sources = SourcesConfig(filesystem=FilesystemSourceConfig(root=corpus))
    yield duck, pg, sources, corpus
    client = Elasticsearch(es_settings.es_url)
    for settings in (duck, pg):
        drop_indices(client, settings.elasticsearch.index_alias)


def test_duckdb_and_postgres_build_the_same_tables_and_index(
    world, es_client: Elasticsearch
) -> None:
    duck, pg, sources, corpus = world

    first = materialize_groups(duck, sources)
    assert asset_metadata(first, "documents")["total_documents"] == SAMPLE_DOCS
    assert asset_metadata(first, "chunks")["active_chunks"] == SAMPLE_CHUNKS
    distinct = asset_metadata(first, "embeddings")["distinct_texts"]
    # The DuckDB run's vectors into PostgreSQL: the PostgreSQL run reads them from there.
    assert copy_embedding_cache(duck.duckdb_path, pg) == distinct

    second = materialize_groups(pg, sources)
    docs_pg = asset_metadata(second, "documents")
    chunks_pg = asset_metadata(second, "chunks")
    emb_pg = asset_metadata(second, "embeddings")
    index_pg = asset_metadata(second, "search_index")
    assert (docs_pg["new"], docs_pg["total_documents"], docs_pg["rejected"]) == (51, 51, 0)
    assert (chunks_pg["docs_chunked"], chunks_pg["active_chunks"]) == (51, SAMPLE_CHUNKS)
    assert (emb_pg["embedded"], emb_pg["cached"]) == (0, distinct)  # read from PostgreSQL
    assert (index_pg["mode"], index_pg["doc_count"]) == ("rebuild", SAMPLE_CHUNKS)
    assert {c.check_name: c.passed for c in second.get_asset_check_evaluations()} == {
        "index_count_matches_chunks": True,
        "alias_points_to_healthy_index": True,
        "vector_dims_match_model": True,
    }

    # The same rows, digests and index contents on both engines.
    for asset, key in (("documents", "documents_digest"), ("chunks", "chunk_set_digest")):
        assert asset_metadata(first, asset)[key] == asset_metadata(second, asset)[key]
    duck_tables, pg_tables = _tables(duck), _tables(pg)
    assert len(pg_tables["docs"]) == SAMPLE_DOCS and len(pg_tables["chunks"]) == SAMPLE_CHUNKS
    assert pg_tables == duck_tables
    duck_live = live_chunk_sync_keys(es_client, duck.elasticsearch.index_alias)
    pg_live = live_chunk_sync_keys(es_client, pg.elasticsearch.index_alias)
    assert pg_live == duck_live == pg_tables["keys"]

    # A changed and an added file, first with an unreachable warehouse: a clear error naming
    # the setting, and nothing lost: the next good run picks both files up.
    changed = corpus / "runbooks" / "battery-swap.txt"
    changed.write_text(changed.read_text() + "\n\nStep 99: log the swap in Roost at once.\n")
    added = corpus / "handbook" / "pg-parity.md"
    added.write_text("# Parity\n\nThe warehouse may live in PostgreSQL.\n")
    later = time.time() + 5
    os.utime(changed, (later, later))
    unreachable = pg.override(warehouse={"url": f"postgresql://llmops@127.0.0.1:{free_port()}/x"})
    failed = materialize_groups(unreachable, sources, must_succeed=False)
    assert not failed.success
    (failure,) = [e.step_failure_data.error for e in failed.all_events if e.is_step_failure]
    message = failure.cause.message if failure.cause else failure.message
    assert message.startswith(
        "llmops_dagster.warehouse.base.WarehouseError: cannot connect to the PostgreSQL "
        "warehouse postgresql://llmops@127.0.0.1:"
    ), message
    assert "(LLMOPS_WAREHOUSE_URL): connection to server" in message
    assert _tables(pg) == pg_tables  # untouched

    doc_id = "fs:runbooks/battery-swap.txt"
    before = {c for c, d, _ in pg_tables["chunks"] if d == doc_id}
    third = materialize_groups(pg, sources)
    docs3 = asset_metadata(third, "documents")
    assert (docs3["new"], docs3["changed"], docs3["deleted"], docs3["total_documents"]) == (
        1,
        1,
        0,
        52,
    )
    after_tables = _tables(pg)
    after = {c for c, d, _ in after_tables["chunks"] if d == doc_id}
    new_doc = {c for c, d, _ in after_tables["chunks"] if d == "fs:handbook/pg-parity.md"}
    added_ids, removed_ids = after - before, before - after
    assert len(new_doc) == 1
    chunks3 = asset_metadata(third, "chunks")
    assert chunks3["docs_chunked"] == 2
    assert chunks3["chunks_added"] == len(added_ids) + 1
    assert chunks3["chunks_removed"] == len(removed_ids)
    assert asset_metadata(third, "embeddings")["embedded"] == len(added_ids) + 1
    index3 = asset_metadata(third, "search_index")
    assert (index3["mode"], index3["indexed"], index3["deleted"]) == (
        "incremental",
        len(added_ids) + 1,
        len(removed_ids),
    )
    assert index3["doc_count"] == SAMPLE_CHUNKS + len(added_ids) - len(removed_ids) + 1
    assert after_tables["removed"] == sorted(removed_ids)
    assert live_chunk_sync_keys(es_client, pg.elasticsearch.index_alias) == after_tables["keys"]


def test_two_sources_load_in_parallel_on_postgres(tmp_path: Path, postgres) -> None:
    """Without the DuckDB one-writer limit, two sources' dlt assets of one run overlap in time
    under the multiprocess executor, and both land in the PostgreSQL warehouse."""
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        f"filesystem:\n  root: {PROJECT_ROOT / 'data' / 'sample'}\n"
        "sql:\n  url_env: MP_SOURCE_DB\n  tables: [{name: faq}]\n"
        "destination: {name: postgres}\n"
    )
    home = dagster_home(tmp_path / "dagster_home")
    database = f"par_{uuid.uuid4().hex[:8]}"
    create_database(postgres, database)
    store = tmp_path / "llmops"
    # The MLflow SQLite store and experiment are created up front: two steps creating them at
    # the same moment race ("table … already exists"), which the warehouse pool used to hide
    # by serialising them.
    tracking_uri = sqlite_store(store / "mlflow.db")
    ensure_mlflow(tracking_uri, Settings().mlflow.experiment)
    env = {
        "DAGSTER_HOME": str(home),
        "LLMOPS_HOME": str(store),
        "LLMOPS_WAREHOUSE_URL": postgres.url(database),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "LLMOPS_SOURCES_CONFIG": str(sources),
        "MP_SOURCE_DB": faq_database(tmp_path / "source.db"),
    }
    log = materialize_in_subprocesses("fs/files,sql/faq", env)
    assert "Step blocked by limit for pool" not in log

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        windows: dict[str, list[float]] = {}
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is not None and event.event_type_value in ("STEP_START", "STEP_SUCCESS"):
                windows.setdefault(str(entry.step_key), []).append(entry.timestamp)
    (fs_start, fs_end), (sql_start, sql_end) = windows["ingest_fs"], windows["ingest_sql"]
    assert fs_start < sql_end and sql_start < fs_end, windows  # the two steps overlapped

    with connect_warehouse(url=postgres.url(database), duckdb_path=store / "x.duckdb") as pg:
        assert pg.scalar('SELECT count(*) FROM "raw"."sql_faq"') == 3
        assert pg.scalar('SELECT count(*) FROM "raw"."fs_files"') == 37  # files, not documents


def _load_two_sources_at_once(tmp_path: Path, url: str, *, serialise: bool) -> list[str]:
    """Two dlt pipelines (distinct tables, one dataset) start loading at the same instant, as
    two sources' steps do under the multiprocess executor; returns their errors."""
    import threading

    import dlt as dlt_lib

    from llmops_dagster.sources.dlt_pipelines import (
        WarehouseTarget,
        first_load_serialised,
        make_pipeline,
    )

    target = WarehouseTarget(tmp_path / "unused.duckdb", "raw", tmp_path / "dlt", url)
    start = threading.Barrier(2)
    errors: list[str] = []

    def load(name: str) -> None:
        pipeline = make_pipeline(target, f"race_{name}")
        rows = dlt_lib.resource([{"id": 1, "name": name}], name=f"{name}_rows")
        with connect_postgres(url) as con:
            start.wait()
            try:
                if serialise:
                    with first_load_serialised(con, "raw"):
                        pipeline.run(rows)
                else:
                    pipeline.run(rows)
            except Exception as exc:  # the race's error is what is compared
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=load, args=(name,)) for name in ("alpha", "beta")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_two_first_loads_into_one_fresh_dataset_both_land(tmp_path: Path, postgres) -> None:
    """The first loads into a fresh PostgreSQL dataset create dlt's shared tables one at a
    time: five fresh databases, two pipelines each, no error and both tables every time."""
    for attempt in range(5):
        database = f"first_{uuid.uuid4().hex[:8]}"
        create_database(postgres, database)
        url = postgres.url(database)
        assert _load_two_sources_at_once(tmp_path / str(attempt), url, serialise=True) == []
        with connect_postgres(url) as con:
            assert {"alpha_rows", "beta_rows", "_dlt_version"} <= set(con.tables("raw"))
            assert con.scalar("SELECT count(*) FROM raw.alpha_rows") == 1
            assert con.scalar("SELECT count(*) FROM raw.beta_rows") == 1


def test_a_first_load_waits_for_the_one_in_progress_and_later_loads_do_not(
    postgres,
) -> None:
    """``first_load_serialised`` blocks a second first load until the first is done (it then
    reports that it waited); once dlt's tables exist nobody waits, even while another holds
    the lock."""
    import threading

    from llmops_dagster.sources.dlt_pipelines import first_load_serialised

    database = f"lock_{uuid.uuid4().hex[:8]}"
    create_database(postgres, database)
    url = postgres.url(database)
    order: list[str] = []
    entered = threading.Event()
    release = threading.Event()

    def first() -> None:
        with connect_postgres(url) as con, first_load_serialised(con, "raw") as waited:
            order.append(f"first in (waited={waited})")
            entered.set()
            release.wait(30)
            con.execute("CREATE SCHEMA raw")
            con.execute("CREATE TABLE raw._dlt_version (version int)")
            order.append("first out")

    def second() -> None:
        with connect_postgres(url) as con, first_load_serialised(con, "raw") as waited:
            order.append(f"second in (waited={waited})")

    holder = threading.Thread(target=first)
    holder.start()
    assert entered.wait(30)
    waiter = threading.Thread(target=second)
    waiter.start()
    waiter.join(1.0)
    assert waiter.is_alive()  # blocked behind the first load
    release.set()
    holder.join(30)
    waiter.join(30)
    assert order == ["first in (waited=True)", "first out", "second in (waited=True)"]

    # dlt's tables exist now: a load goes ahead while someone else holds the lock.
    with (
        connect_postgres(url) as other,
        other.exclusive("dlt-dataset:raw"),
        connect_postgres(url) as con,
        first_load_serialised(con, "raw") as waited,
    ):
        assert waited is False


def test_eight_connections_opened_at_once_on_a_fresh_database_all_succeed(postgres) -> None:
    """Opening the warehouse creates schema ``llmops`` and the stores create their tables with
    ``IF NOT EXISTS``, which PostgreSQL does not make atomic; eight sessions doing both at the
    same instant on a fresh database all succeed, and each table exists once."""
    import threading

    database = f"ddl_{uuid.uuid4().hex[:8]}"
    create_database(postgres, database)
    url = postgres.url(database)
    start = threading.Barrier(8)
    errors: list[str] = []

    def open_and_create() -> None:
        try:
            start.wait()
            with connect_postgres(url) as con:
                con.execute("CREATE TABLE IF NOT EXISTS llmops.race_probe (id int)")
        except Exception as exc:  # every error is reported
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=open_and_create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with connect_postgres(url) as con:
        assert con.tables("llmops") == ["race_probe"]
