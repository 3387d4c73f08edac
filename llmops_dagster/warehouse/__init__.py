"""The warehouse dlt loads into and the pipeline's own tables (schema ``llmops``) live in.

A DuckDB file by default; PostgreSQL when ``LLMOPS_WAREHOUSE_URL`` names one. Library code takes
a :class:`Warehouse` (see :mod:`.base`); :func:`as_warehouse` also accepts a plain DuckDB
connection, so callers and tests that open the file themselves keep working.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa

from llmops_dagster.warehouse.base import (
    PIPELINE_SCHEMA,
    Warehouse,
    WarehouseConfigError,
    WarehouseError,
)
from llmops_dagster.warehouse.duckdb import (
    DUCKDB_SETTING,
    DuckDBWarehouse,
    connect_duckdb,
    open_connection,
)

URL_SETTING = "LLMOPS_WAREHOUSE_URL"
POSTGRES_SCHEMES = ("postgresql", "postgres")

__all__ = [
    "DUCKDB_SETTING",
    "PIPELINE_SCHEMA",
    "URL_SETTING",
    "DuckDBWarehouse",
    "Warehouse",
    "WarehouseConfigError",
    "WarehouseError",
    "as_warehouse",
    "connect",
    "connect_warehouse",
    "open_connection",
    "query_arrow",
    "table_exists",
    "warehouse_kind",
]


def warehouse_kind(url: str | None) -> str:
    """``duckdb`` for no URL, ``postgres`` for a ``postgresql://`` URL; anything else is an
    error naming the setting."""
    if not url:
        return "duckdb"
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    if scheme in POSTGRES_SCHEMES:
        return "postgres"
    from llmops_dagster.warehouse.postgres import redact_url

    raise WarehouseConfigError(
        f"{URL_SETTING}={redact_url(url)!r}: expected "
        "postgresql://user[:password]@host[:port]/database (or unset for the DuckDB file "
        "LLMOPS_DUCKDB_PATH)"
    )


def as_warehouse(con: Any) -> Warehouse:
    """``con`` as a :class:`Warehouse`: adapters pass through, a DuckDB connection is wrapped."""
    if isinstance(con, Warehouse):
        return con
    import duckdb

    if isinstance(con, duckdb.DuckDBPyConnection):
        return DuckDBWarehouse(con)
    raise TypeError(f"not a warehouse connection: {type(con).__name__}")


@contextmanager
def connect_warehouse(
    *, url: str | None, duckdb_path: Path, read_only: bool = False, wait_s: float = 60.0
) -> Iterator[Warehouse]:
    """The configured warehouse, opened for one block and always closed: PostgreSQL at ``url``
    when given, else the DuckDB file (waiting up to ``wait_s`` for another writer's lock)."""
    if warehouse_kind(url) == "postgres":
        from llmops_dagster.warehouse.postgres import connect_postgres

        assert url is not None
        with connect_postgres(url, read_only=read_only) as warehouse:
            yield warehouse
        return
    with connect_duckdb(duckdb_path, read_only=read_only, wait_s=wait_s) as warehouse:
        yield warehouse


#: The DuckDB file as a warehouse (kept under its old name for callers that open the file).
connect = connect_duckdb


def table_exists(con: Any, schema: str, table: str) -> bool:
    return as_warehouse(con).table_exists(schema, table)


def query_arrow(con: Any, sql: str, params: list | None = None) -> pa.Table:
    return as_warehouse(con).query_arrow(sql, params)


def replace_table(con: Any, table: str, columns: dict[str, str], rows: list[list[Any]]) -> int:
    """Replace ``table`` with ``rows`` in one transaction (a reader sees the old rows or the new
    ones). Portable: PostgreSQL has no ``CREATE OR REPLACE TABLE``. Returns the row count."""
    wh = as_warehouse(con)
    with wh.transaction():
        wh.execute(f"DROP TABLE IF EXISTS {table}")
        wh.execute(f"CREATE TABLE {table} ({', '.join(f'{c} {t}' for c, t in columns.items())})")
        if rows:
            marks = ", ".join("?" for _ in columns)
            wh.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
    return len(rows)
