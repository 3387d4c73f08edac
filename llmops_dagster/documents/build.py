"""The documents step end to end: raw dlt tables → ``llmops.documents`` + a delta.

Only raw rows loaded since the last successful build are read (dlt stamps each row with its
``_dlt_load_id``; merged rows get the new load's id), so an unchanged source costs one cheap
query per table. ``full_refresh=True`` re-reads everything, e.g. after the cleaning transform
changed. The raw tables are read through the warehouse interface, so dlt may have loaded them
into DuckDB or PostgreSQL (dataset = schema).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from llmops_dagster.documents.document_table import DocumentsDelta, get_watermarks, sync_documents
from llmops_dagster.documents.normalize import (
    NormalizedBatch,
    TextTransform,
    normalize_file_rows,
    normalize_record_rows,
)
from llmops_dagster.sources.filesystem import list_current_files
from llmops_dagster.sources.rest_api import load_rest_api_config
from llmops_dagster.sources.source_config import RecordMapping, SourcesConfig
from llmops_dagster.sources.tables import API_TABLE_PREFIX, FS_TABLE, SQL_TABLE_PREFIX
from llmops_dagster.warehouse import Warehouse, as_warehouse

_BATCH_ROWS = 256


def raw_tables(con: Warehouse | Any, dataset: str) -> list[str]:
    """Data tables dlt loaded into ``dataset`` that the documents step understands."""
    names = as_warehouse(con).tables(dataset)
    return [
        n
        for n in names
        if "__" not in n  # nested child tables: their data is in the parent's JSON columns
        and not n.startswith("_dlt")
        and (n == FS_TABLE or n.startswith((API_TABLE_PREFIX, SQL_TABLE_PREFIX)))
    ]


def iter_raw_rows(
    con: Warehouse | Any, dataset: str, table: str, after_load_id: str | None
) -> Iterator[list[dict[str, Any]]]:
    """Rows of ``dataset.table`` loaded after ``after_load_id``, in Arrow record batches."""
    query = f'SELECT * FROM "{dataset}"."{table}"'
    params: list[Any] = []
    if after_load_id is not None:
        # DOUBLE PRECISION, not DOUBLE: the spelling both engines accept.
        query += " WHERE CAST(_dlt_load_id AS DOUBLE PRECISION) > CAST(? AS DOUBLE PRECISION)"
        params.append(after_load_id)
    batches = as_warehouse(con).iter_arrow(query, params or None, batch_rows=_BATCH_ROWS)
    for record_batch in batches:
        yield record_batch.to_pylist()


def _max_load_id(con: Warehouse, dataset: str, table: str) -> str | None:
    rows = con.fetchall(
        f'SELECT _dlt_load_id FROM "{dataset}"."{table}" '
        "ORDER BY CAST(_dlt_load_id AS DOUBLE PRECISION) DESC LIMIT 1"
    )
    return str(rows[0][0]) if rows else None


def _record_settings(
    sources: SourcesConfig, table: str
) -> tuple[str, str, RecordMapping | None, str | None]:
    """(source name, collection, mapping, uri prefix) for an ``api_*``/``sql_*`` table."""
    if table.startswith(API_TABLE_PREFIX):
        collection = table[len(API_TABLE_PREFIX) :]
        if sources.rest_api is None:
            return "api", collection, None, None
        api = load_rest_api_config(sources.rest_api.config_path, resolve_secrets=False)
        base_url = str(api.dlt_config["client"]["base_url"]).rstrip("/")
        return api.name, collection, api.mappings.get(table), f"{base_url}/{collection}"
    collection = table[len(SQL_TABLE_PREFIX) :]
    if sources.sql is None:
        return "sql", collection, None, None
    mapping = next((t.records for t in sources.sql.tables if t.name == collection), None)
    return sources.sql.source_name, collection, mapping, None


def build_documents(
    con: Warehouse | Any,
    sources: SourcesConfig,
    *,
    dataset: str = "raw",
    transform: TextTransform | None = None,
    full_refresh: bool = False,
) -> DocumentsDelta:
    """Normalise new raw rows of ``dataset`` into documents, delete vanished files' documents,
    re-resolve stored files' audiences against ``sources.filesystem.audiences``, report a delta.

    Record sources (SQL, REST) read the audience from each row's ``audience_field``: a row whose
    groups changed is re-loaded by its cursor like any edit; after changing ``audience_field``
    itself, run with ``full_refresh`` so that every row is read again.
    """
    con = as_warehouse(con)
    seen = {} if full_refresh else get_watermarks(con)
    batch = NormalizedBatch()
    new_marks: dict[str, str] = {}
    current_files: dict[str, set[str]] = {}
    fs = sources.filesystem
    if fs is not None and fs.root.is_dir():
        current_files[fs.source_name] = list_current_files(fs.root, fs.globs)

    for table in raw_tables(con, dataset):
        mark_key = f"{dataset}.{table}"
        after = seen.get(mark_key)
        latest = _max_load_id(con, dataset, table)
        if latest is None or latest == after:
            continue
        if table == FS_TABLE:
            source = fs.source_name if fs else "fs"
            alive = current_files.get(source)
            for rows in iter_raw_rows(con, dataset, table, after):
                if alive is not None:
                    rows = [r for r in rows if r.get("relative_path") in alive]
                batch.extend(
                    normalize_file_rows(
                        rows,
                        source=source,
                        mapping=fs.records if fs else None,
                        transform=transform,
                        audience=fs.audience_for if fs else None,
                    )
                )
        else:
            source, collection, mapping, uri_prefix = _record_settings(sources, table)
            for rows in iter_raw_rows(con, dataset, table, after):
                batch.extend(
                    normalize_record_rows(
                        rows,
                        source=source,
                        collection=collection,
                        mapping=mapping,
                        transform=transform,
                        uri_prefix=uri_prefix,
                    )
                )
        new_marks[mark_key] = latest
    audiences = {fs.source_name: fs.audience_for} if fs is not None else None
    return sync_documents(
        con, batch, current_files=current_files, watermarks=new_marks, audiences=audiences
    )
