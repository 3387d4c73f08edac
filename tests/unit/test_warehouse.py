"""The warehouse connection: closed even when the body raises, and a file locked by another
process is waited for (bounded) instead of failing the asset at once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from llmops_dagster.resources import WarehouseResource
from llmops_dagster.warehouse import open_connection

pytestmark = pytest.mark.unit

HOLD_LOCK = (
    "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
    "time.sleep(float(sys.argv[2])); c.close()"
)


def _resource(path: Path, wait_s: float = 60.0) -> WarehouseResource:
    return WarehouseResource(
        database=str(path), dlt_pipelines_dir=str(path.parent / "dlt"), lock_wait_s=wait_s
    )


def test_connection_is_closed_when_the_body_raises(tmp_path: Path) -> None:
    warehouse = _resource(tmp_path / "w.duckdb")
    seen: list[duckdb.DuckDBPyConnection] = []
    with pytest.raises(ZeroDivisionError), warehouse.get_connection() as con:
        seen.append(con)
        con.execute("CREATE TABLE llmops.t (x INTEGER)")
        _ = 1 / 0
    with pytest.raises(duckdb.ConnectionException):
        seen[0].execute("SELECT 1")
    with warehouse.get_connection() as con:  # the schema was created, the table kept
        assert con.execute("SELECT count(*) FROM llmops.t").fetchone() == (0,)


def _hold(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_lock_held_by_another_process_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    holder = _hold(path, 2.0)
    started = time.monotonic()
    with _resource(path, wait_s=30).get_connection() as con:
        assert con.execute("SELECT 42").fetchone() == (42,)
    assert time.monotonic() - started >= 1.0  # it really waited for the other writer
    assert holder.wait(timeout=30) == 0


def test_a_lock_held_too_long_names_the_file_and_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    holder = _hold(path, 6.0)
    try:
        with pytest.raises(duckdb.IOException, match=r"w\.duckdb \(LLMOPS_DUCKDB_PATH\)"):
            open_connection(path, wait_s=0.5, poll_s=0.1)
    finally:
        holder.kill()
        holder.wait(timeout=30)


# --- The warehouse interface: engine choice, portable SQL, bulk encoding ----------------------


def test_the_url_chooses_the_engine_and_a_bad_one_names_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llmops_dagster.config import Settings
    from llmops_dagster.warehouse import WarehouseConfigError, warehouse_kind

    assert warehouse_kind(None) == "duckdb"
    assert warehouse_kind("postgresql://u@h:5432/db") == "postgres"
    assert warehouse_kind("postgresql+psycopg2://u@h/db") == "postgres"
    with pytest.raises(WarehouseConfigError, match=r"URL='mysql://u:\*\*\*@h/db': expected post"):
        warehouse_kind("mysql://u:secret@h/db")
    monkeypatch.setenv("LLMOPS_WAREHOUSE_URL", "sqlite:///x.db")
    with pytest.raises(ValueError, match=r"LLMOPS_WAREHOUSE_URL='sqlite:///x\.db'"):
        Settings()
    monkeypatch.setenv("LLMOPS_WAREHOUSE_URL", "postgresql://u@h:5/db")
    assert Settings().warehouse_target().kind == "postgres"


def test_placeholders_become_pyformat_outside_literals() -> None:
    from llmops_dagster.warehouse.postgres import to_pyformat

    sql = "SELECT '?', \"a?\", x || '|%' FROM t WHERE a = ? AND b LIKE 'x%' AND c % 2 = ?"
    assert to_pyformat(sql) == (
        "SELECT '?', \"a?\", x || '|%' FROM t WHERE a = %s AND b LIKE 'x%' AND c %% 2 = %s"
    )


def test_arrow_rows_are_encoded_for_copy_without_losing_nulls_or_quotes() -> None:
    import datetime as dt

    import pyarrow as pa

    from llmops_dagster.warehouse.postgres import arrow_to_csv, redact_url

    table = pa.table(
        {
            "s": pa.array(['a "b", c', "", None], pa.string()),
            "g": pa.array([["x", 'y "z"'], [], None], pa.list_(pa.string())),
            "v": pa.array([[0.1, -2.5], [1e-8], None], pa.list_(pa.float32())),
            "n": pa.array([1, None, 3], pa.int32()),
            "t": pa.array(
                [dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), None, None],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    assert arrow_to_csv(table).getvalue().decode().splitlines() == [
        '"a ""b"", c","{""x"",""y \\""z\\""""}","{0.1,-2.5}","1","2026-01-02 03:04:05.000000Z"',
        '"","{}","{1e-8}",,',
        ',,,"3",',
    ]
    assert redact_url("postgresql://u:pw@h:1/db") == "postgresql://u:***@h:1/db"


def test_the_duckdb_adapter_upserts_arrow_and_rolls_back(tmp_path: Path) -> None:
    import pyarrow as pa

    from llmops_dagster.warehouse import connect_warehouse

    with connect_warehouse(url=None, duckdb_path=tmp_path / "w.duckdb") as con:
        con.execute("CREATE TABLE llmops.kv (k VARCHAR PRIMARY KEY, v INTEGER, seen TIMESTAMP)")
        rows = pa.table({"k": ["a", "b"], "v": pa.array([1, 2], pa.int32())})
        con.upsert_arrow("llmops.kv", rows, ["k"], constants={"seen": "NULL"})
        con.upsert_arrow("llmops.kv", rows.slice(1).set_column(1, "v", pa.array([5])), ["k"])
        assert con.fetchall("SELECT k, v FROM llmops.kv ORDER BY k") == [("a", 1), ("b", 5)]
        con.upsert_arrow("llmops.kv", rows, ["k"], update_columns=[])  # keep what is stored
        assert con.fetchall("SELECT k, v FROM llmops.kv ORDER BY k") == [("a", 1), ("b", 5)]
        with pytest.raises(ZeroDivisionError), con.transaction():
            assert con.update("DELETE FROM llmops.kv WHERE k = ?", ["a"]) == 1
            _ = 1 / 0
        assert con.scalar("SELECT count(*) FROM llmops.kv") == 2
        assert con.tables("llmops") == ["kv"] and con.table_exists("llmops", "kv")


def test_sources_destination_must_be_the_warehouse(tmp_path: Path) -> None:
    from llmops_dagster.sources.dlt_pipelines import WarehouseTarget, check_destination
    from llmops_dagster.sources.source_config import DestinationConfig
    from llmops_dagster.warehouse import WarehouseConfigError

    duck = WarehouseTarget(duckdb_path=tmp_path / "w.duckdb")
    pg = WarehouseTarget(duckdb_path=tmp_path / "w.duckdb", url="postgresql://u:pw@h/db")
    assert check_destination(duck, DestinationConfig()) == "duckdb"
    assert check_destination(pg, DestinationConfig()) == "postgres"  # unset follows the URL
    assert check_destination(pg, DestinationConfig(name="postgres")) == "postgres"
    with pytest.raises(WarehouseConfigError, match="LLMOPS_WAREHOUSE_URL is unset"):
        check_destination(duck, DestinationConfig(name="postgres"))
    with pytest.raises(
        WarehouseConfigError,
        match=r"'duckdb' does not match the warehouse \(LLMOPS_WAREHOUSE_URL=postgresql://u:\*\*\*@h",
    ):
        check_destination(pg, DestinationConfig(name="duckdb"))
    with pytest.raises(WarehouseConfigError, match="'bigquery': the documents step reads"):
        check_destination(pg, DestinationConfig(name="bigquery"))


def test_the_pool_of_the_dlt_assets_follows_the_warehouse(tmp_path: Path) -> None:
    from assets.ingest import WAREHOUSE_WRITERS_POOL, build_ingest_assets, ingest_pool
    from llmops_dagster.sources.dlt_pipelines import WarehouseTarget
    from llmops_dagster.sources.source_config import FilesystemSourceConfig, SourcesConfig

    duck = WarehouseTarget(duckdb_path=tmp_path / "w.duckdb", pipelines_dir=tmp_path / "dlt")
    pg = WarehouseTarget(
        duckdb_path=tmp_path / "w.duckdb",
        pipelines_dir=tmp_path / "dlt",
        url="postgresql://u@127.0.0.1:1/db",
    )
    assert (ingest_pool(duck), ingest_pool(pg)) == (WAREHOUSE_WRITERS_POOL, None)
    sources = SourcesConfig(filesystem=FilesystemSourceConfig(root=tmp_path))
    (on_pg,) = build_ingest_assets(sources, pg)
    (on_duck,) = build_ingest_assets(sources, duck)
    assert (on_duck.node_def.pool, on_pg.node_def.pool) == (WAREHOUSE_WRITERS_POOL, None)


def test_a_url_with_a_password_reaches_the_resource_as_an_env_var(tmp_path: Path) -> None:
    import dagster as dg

    from llmops_dagster.config import Settings
    from llmops_dagster.resources import build_resources

    base = Settings(home=tmp_path)
    plain = base.override(warehouse={"url": "postgresql://u@h:5432/db"})
    secret = base.override(warehouse={"url": "postgresql://u:pw@h:5432/db"})
    assert build_resources(plain, with_dlt=False)["warehouse"].url == "postgresql://u@h:5432/db"
    field = build_resources(secret, with_dlt=False)["warehouse"].url
    assert field == dg.EnvVar("LLMOPS_WAREHOUSE_URL")
    resolved = build_resources(secret, with_dlt=False, resolve_secrets=True)["warehouse"]
    assert resolved.url == "postgresql://u:pw@h:5432/db"
    assert resolved.location == "postgresql://u:***@h:5432/db"


def test_a_plain_duckdb_connection_is_wrapped_and_an_adapter_passes_through() -> None:
    """Library functions take a plain DuckDB connection too (callers that open the file
    themselves): ``as_warehouse`` wraps it once; anything else is refused by type."""
    from llmops_dagster.warehouse import DuckDBWarehouse, as_warehouse

    con = duckdb.connect(":memory:")
    wrapped = as_warehouse(con)
    assert isinstance(wrapped, DuckDBWarehouse)
    assert as_warehouse(wrapped) is wrapped
    assert wrapped.scalar("SELECT 41 + 1") == 42
    with pytest.raises(TypeError, match="not a warehouse connection: str"):
        as_warehouse("w.duckdb")
