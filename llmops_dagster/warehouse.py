"""The DuckDB warehouse that dlt loads into and the pipeline's own tables live in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

PIPELINE_SCHEMA = "llmops"


@contextmanager
def connect(path: Path, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection that is always closed: DuckDB allows one writer process per file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only)
    try:
        if not read_only:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {PIPELINE_SCHEMA}")
        yield con
    finally:
        con.close()


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, table],
    ).fetchone()
    return bool(row and row[0])


def query_arrow(
    con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None
) -> pa.Table:
    """A query's result as Arrow without the extra copy a DB-API cursor makes."""
    return con.sql(sql, params=params).to_arrow_table()
