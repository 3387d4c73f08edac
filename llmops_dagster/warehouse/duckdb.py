"""The DuckDB adapter: the default, one file on one machine.

Arrow goes in and out without copies: query results come from ``con.sql(...).to_arrow_table()``
and bulk writes register the Arrow table as a view that ``INSERT … SELECT`` scans in place.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from llmops_dagster.warehouse.base import PIPELINE_SCHEMA, Warehouse

DUCKDB_SETTING = "LLMOPS_DUCKDB_PATH"


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
                    f"cannot open the warehouse {path} ({DUCKDB_SETTING}): {exc}"
                ) from exc
            time.sleep(poll_s)


class DuckDBWarehouse(Warehouse):
    """A DuckDB connection behind the :class:`Warehouse` interface.

    Attributes it does not define fall through to the connection (``register``, ``sql``…), so
    code written against a plain DuckDB connection keeps working on the DuckDB warehouse.
    """

    kind = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path | None = None) -> None:
        self.con = con
        self.path = path
        self._in_transaction = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)

    @property
    def location(self) -> str:
        return str(self.path) if self.path else "duckdb (in-memory or caller's connection)"

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        return self.con.execute(sql, list(params) if params is not None else None)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.con.executemany(sql, [list(r) for r in rows])

    def update(self, sql: str, params: Sequence[Any] | None = None) -> int:
        rows = self.execute(sql, params).fetchall()  # DuckDB answers DML with one count row
        return int(rows[0][0]) if rows else 0

    def query_arrow(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        """A query's result as Arrow without the extra copy a DB-API cursor makes."""
        return self.con.sql(sql, params=list(params) if params else None).to_arrow_table()

    def iter_arrow(
        self, sql: str, params: Sequence[Any] | None = None, *, batch_rows: int = 1000
    ) -> Iterator[pa.RecordBatch]:
        reader = self.con.sql(sql, params=list(params) if params else None).to_arrow_reader(
            batch_rows
        )
        yield from reader

    @contextmanager
    def temp_table(self, name: str, table: pa.Table) -> Iterator[str]:
        self.con.register(name, table)
        try:
            yield name
        finally:
            self.con.unregister(name)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._in_transaction:
            yield
            return
        self.con.execute("BEGIN TRANSACTION")
        self._in_transaction = True
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        else:
            self.con.execute("COMMIT")
        finally:
            self._in_transaction = False

    @contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        # The file has one writer process already (DuckDB's own lock, the ``warehouse`` pool
        # within an instance), so there is nothing more to exclude.
        yield

    def close(self) -> None:
        self.con.close()


@contextmanager
def connect_duckdb(
    path: Path, *, read_only: bool = False, wait_s: float = 60.0
) -> Iterator[DuckDBWarehouse]:
    """The file as a :class:`DuckDBWarehouse`, always closed, even when the body raises (DuckDB
    allows one writer process per file, so a connection left open blocks the next writer)."""
    warehouse = DuckDBWarehouse(open_connection(path, read_only=read_only, wait_s=wait_s), path)
    try:
        if not read_only:
            warehouse.ensure_schema(PIPELINE_SCHEMA)
        yield warehouse
    finally:
        warehouse.close()
