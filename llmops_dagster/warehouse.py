"""The DuckDB warehouse that dlt loads into and the pipeline's own tables live in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

PIPELINE_SCHEMA = "llmops"


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    return "lock" in str(exc).lower()


def open_connection(
    path: Path, *, read_only: bool = False, wait_s: float = 60.0, poll_s: float = 0.5
) -> duckdb.DuckDBPyConnection:
    """Open ``path``, waiting up to ``wait_s`` while another process holds its write lock.

    DuckDB allows one writer process per file. Within one Dagster instance the ``duckdb`` pool
    serialises writers; this wait covers other processes (a CLI command, a second instance).
    Any other error, or a lock held longer than ``wait_s``, is raised with the file named.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if not _is_lock_conflict(exc) or time.monotonic() >= deadline:
                raise duckdb.IOException(
                    f"cannot open the warehouse {path} (LLMOPS_DUCKDB_PATH): {exc}"
                ) from exc
            time.sleep(poll_s)


@contextmanager
def connect(
    path: Path, *, read_only: bool = False, wait_s: float = 60.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection that is always closed, even when the body raises (DuckDB allows one writer
    process per file, so a connection left open blocks the next writer)."""
    con = open_connection(path, read_only=read_only, wait_s=wait_s)
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


def query_arrow(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pa.Table:
    """A query's result as Arrow without the extra copy a DB-API cursor makes."""
    return con.sql(sql, params=params).to_arrow_table()
