"""A dlt ``sql_database`` source over configured tables; tables ``sql_<table>``.

Any SQLAlchemy URL works (SQLite, Postgres, MySQL, MSSQL...). Each table merges on its primary
key and, when it has a cursor column (default ``updated_at``), only rows with a cursor at or
after the last run's maximum are read: new and updated rows, never the whole table again.
Deleted rows are invisible to a cursor; use ``cursor: null`` for a full reload when that matters.
"""

from __future__ import annotations

from collections.abc import Sequence

import dlt
from dlt.sources import DltSource
from dlt.sources.sql_database import sql_database

from llmops_dagster.sources.source_config import SqlSourceConfig, SqlTableConfig
from llmops_dagster.sources.tables import SQL_TABLE_PREFIX


def sql_table_name(table: str) -> str:
    return f"{SQL_TABLE_PREFIX}{table}"


def make_sql_source(
    url: str,
    tables: Sequence[SqlTableConfig | str],
    schema: str | None = None,
    name: str = "sql",
) -> DltSource:
    """dlt source reading ``tables`` from ``url`` incrementally, merged on primary keys."""
    configs = [SqlTableConfig(name=t) if isinstance(t, str) else t for t in tables]
    if not configs:
        raise ValueError("sql source: no tables configured (sql.tables)")
    source = sql_database(
        credentials=url,
        schema=schema,
        table_names=[c.name for c in configs],
        # Reflected types (not inferred from values) keep timestamps as timestamps in DuckDB.
        reflection_level="full",
    ).clone(with_name=name)
    for config in configs:
        resource = source.resources[config.name]
        hints: dict = {
            "table_name": sql_table_name(config.name),
            "primary_key": config.primary_key,
            "write_disposition": "merge",
        }
        if config.cursor:
            hints["incremental"] = dlt.sources.incremental(
                config.cursor, initial_value=config.initial_value
            )
        resource.apply_hints(**hints)
    return source


def make_sql_source_from_config(config: SqlSourceConfig) -> DltSource:
    """The source described by ``sources.yaml``'s ``sql:`` block (URL from env if configured)."""
    return make_sql_source(
        config.resolved_url(), config.tables, schema=config.schema_name, name=config.source_name
    )
