"""The one interface the pipeline's own tables are read and written through.

Two engines sit behind it (:mod:`.duckdb`, :mod:`.postgres`). The stores write portable SQL
(``?`` placeholders, ``INSERT … ON CONFLICT``, ``information_schema``) and hand bulk data over as
Arrow tables (:meth:`Warehouse.temp_table`, :meth:`Warehouse.upsert_arrow`); each adapter moves
Arrow in its engine's fast way (DuckDB scans the Arrow table in place, PostgreSQL gets a COPY).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import pyarrow as pa

PIPELINE_SCHEMA = "llmops"


class WarehouseError(RuntimeError):
    """The warehouse cannot be reached or used; the message names the setting to fix."""


class WarehouseConfigError(WarehouseError, ValueError):
    """The warehouse settings are invalid or contradict each other (a bad input, not an outage)."""


class Warehouse(ABC):
    """An open connection to the warehouse (one per asset body; not shared across threads)."""

    kind: ClassVar[str]

    # -- statements ----------------------------------------------------------------------------
    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        """Run one statement with ``?`` placeholders; the result has ``fetchall``/``fetchone``."""

    @abstractmethod
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    @abstractmethod
    def update(self, sql: str, params: Sequence[Any] | None = None) -> int:
        """Run an UPDATE/DELETE and return how many rows it changed."""

    def fetchall(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.execute(sql, params).fetchall()]

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        rows = self.fetchall(sql, params)  # all, not fetchone: DuckDB keeps a result open
        return rows[0][0] if rows else None

    @abstractmethod
    def query_arrow(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        """A query's result as one Arrow table."""

    @abstractmethod
    def iter_arrow(
        self, sql: str, params: Sequence[Any] | None = None, *, batch_rows: int = 1000
    ) -> Iterator[pa.RecordBatch]:
        """A query's result in record batches of at most ``batch_rows`` rows."""

    # -- bulk data ------------------------------------------------------------------------------
    @abstractmethod
    def temp_table(self, name: str, table: pa.Table) -> AbstractContextManager[str]:
        """``table`` visible to SQL as ``name`` for the ``with`` block (joins, INSERT … SELECT)."""

    def insert_arrow(self, target: str, table: pa.Table) -> None:
        """Append ``table``'s rows to ``target`` (columns by name)."""
        if table.num_rows == 0:
            return
        cols = ", ".join(table.column_names)
        with self.temp_table("_llmops_insert", table) as tmp:
            self.execute(f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {tmp}")

    def upsert_arrow(
        self,
        target: str,
        table: pa.Table,
        key_columns: Sequence[str],
        *,
        constants: Mapping[str, str] | None = None,
        constant_params: Sequence[Any] = (),
        update_columns: Sequence[str] | None = None,
    ) -> None:
        """Insert ``table`` into ``target``; rows whose ``key_columns`` exist are updated.

        ``constants`` adds columns computed in SQL (``{"status": "'active'", "at": "?"}``, with
        ``constant_params`` for their placeholders). ``update_columns`` limits what a conflict
        overwrites (default: every non-key column); an empty list keeps the stored row.
        """
        if table.num_rows == 0:
            return
        constants = dict(constants or {})
        names = [*table.column_names, *constants]
        select = ", ".join([*table.column_names, *constants.values()])
        keys = ", ".join(key_columns)
        if update_columns is None:
            update_columns = [c for c in names if c not in key_columns]
        if update_columns:
            sets = ", ".join(f"{c} = excluded.{c}" for c in update_columns)
            action = f"DO UPDATE SET {sets}"
        else:
            action = "DO NOTHING"
        with self.temp_table("_llmops_upsert", table) as tmp:
            self.execute(
                f"INSERT INTO {target} ({', '.join(names)}) SELECT {select} FROM {tmp} "
                f"ON CONFLICT ({keys}) {action}",
                list(constant_params) or None,
            )

    # -- schema and transactions ---------------------------------------------------------------
    def ensure_schema(self, schema: str = PIPELINE_SCHEMA) -> None:
        self.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")

    def table_exists(self, schema: str, table: str) -> bool:
        return bool(
            self.scalar(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_schema = ? AND table_name = ?",
                [schema, table],
            )
        )

    def tables(self, schema: str) -> list[str]:
        rows = self.fetchall(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [schema]
        )
        return sorted(str(r[0]) for r in rows)

    def columns(self, schema: str, table: str) -> list[str]:
        rows = self.fetchall(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [schema, table],
        )
        return [str(r[0]) for r in rows]

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """All statements of the block commit together or not at all (re-entrant)."""

    @abstractmethod
    def exclusive(self, key: str) -> AbstractContextManager[None]:
        """Hold a lock named ``key`` across connections (and processes) for the block."""

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the data lives, safe to show (no password): lineage and error messages."""
