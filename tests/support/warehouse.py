"""Warehouse contents a test starts from instead of computing them again."""

from __future__ import annotations

from pathlib import Path

from llmops_dagster.config import Settings
from llmops_dagster.embed.cache import CACHE_TABLE, ensure_cache_table
from llmops_dagster.warehouse import connect_warehouse


def copy_embedding_cache(source: Path, target: Settings) -> int:
    """The vectors of the DuckDB warehouse ``source`` into ``target``'s warehouse (DuckDB or
    PostgreSQL, created if new) through the adapter's bulk upsert; how many it holds then.
    The cache is keyed by (model id, text hash), so a text found there is never embedded
    again: the target's runs embed only what ``source`` did not."""
    with connect_warehouse(url=None, duckdb_path=source, read_only=True) as duck:
        vectors = duck.query_arrow(
            f"SELECT model_id, content_hash, dims, vector FROM {CACHE_TABLE}"
        )
    target.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    with connect_warehouse(url=target.warehouse.url, duckdb_path=target.duckdb_path) as warehouse:
        ensure_cache_table(warehouse)
        warehouse.upsert_arrow(
            CACHE_TABLE, vectors, ["model_id", "content_hash"], update_columns=[]
        )
        return int(warehouse.scalar(f"SELECT count(*) FROM {CACHE_TABLE}"))
