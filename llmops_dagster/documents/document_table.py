"""Storage of ``llmops.documents`` / ``llmops.rejected_documents`` with a change report.

``sync_documents`` upserts a batch and reports, by doc id, what is new, changed (text hash or
audience differs), unchanged and deleted. The chunker re-chunks documents whose text changed and
drops chunks of ``delta.deleted``; the index sync re-writes the chunks of documents whose
audience changed; nothing else needs touching, which is what makes the pipeline incremental.
All writes of one sync happen in one transaction: a failure leaves the tables as they were.
Portable SQL through the warehouse interface: the same code runs on DuckDB and PostgreSQL.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pyarrow as pa

from llmops_dagster.access import PUBLIC, normalize_audience
from llmops_dagster.documents.normalize import AudienceResolver, NormalizedBatch
from llmops_dagster.documents.rows import DOCUMENT_FIELDS, REJECTED_FIELDS, Document, Rejected
from llmops_dagster.warehouse import Warehouse, as_warehouse

SCHEMA = "llmops"
DOCUMENTS_TABLE = f"{SCHEMA}.documents"
REJECTED_TABLE = f"{SCHEMA}.rejected_documents"
WATERMARKS_TABLE = f"{SCHEMA}.documents_watermarks"

_DOCUMENTS_DDL = f"""
CREATE TABLE IF NOT EXISTS {DOCUMENTS_TABLE} (
    doc_id VARCHAR PRIMARY KEY,
    source VARCHAR NOT NULL,
    natural_key VARCHAR NOT NULL,
    title VARCHAR,
    text VARCHAR NOT NULL,
    uri VARCHAR,
    format VARCHAR,
    updated_at TIMESTAMPTZ,
    content_hash VARCHAR NOT NULL,
    metadata VARCHAR,
    allowed_groups VARCHAR[] NOT NULL DEFAULT ARRAY['public']
)"""
# Tables created before access control get the column; their documents were public.
_DOCUMENTS_MIGRATE = (
    f"ALTER TABLE {DOCUMENTS_TABLE} ADD COLUMN IF NOT EXISTS "
    "allowed_groups VARCHAR[] DEFAULT ARRAY['public']"
)
_REJECTED_DDL = f"""
CREATE TABLE IF NOT EXISTS {REJECTED_TABLE} (
    doc_id VARCHAR PRIMARY KEY,
    source VARCHAR NOT NULL,
    natural_key VARCHAR NOT NULL,
    uri VARCHAR,
    reason VARCHAR NOT NULL,
    detail VARCHAR,
    rejected_at TIMESTAMPTZ
)"""
_WATERMARKS_DDL = f"""
CREATE TABLE IF NOT EXISTS {WATERMARKS_TABLE} (
    raw_table VARCHAR PRIMARY KEY,
    last_load_id VARCHAR NOT NULL
)"""

_DOC_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("source", pa.string()),
        ("natural_key", pa.string()),
        ("title", pa.string()),
        ("text", pa.string()),
        ("uri", pa.string()),
        ("format", pa.string()),
        ("updated_at", pa.timestamp("us", tz="UTC")),
        ("content_hash", pa.string()),
        ("metadata", pa.string()),
        ("allowed_groups", pa.list_(pa.string())),
    ]
)
_REJ_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("source", pa.string()),
        ("natural_key", pa.string()),
        ("uri", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("rejected_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass
class DocumentsDelta:
    """What one sync changed, by doc id (sorted), plus rejection counts by reason."""

    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    #: The part of ``changed`` whose text is the same and only the audience moved: nothing is
    #: re-chunked or re-embedded for these, the index sync re-writes their chunks.
    audience_changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    total_documents: int = 0

    @property
    def to_chunk(self) -> list[str]:
        """Doc ids whose chunks must be (re)built."""
        return sorted({*self.new, *self.changed})

    @property
    def rejected_count(self) -> int:
        return sum(self.rejected_by_reason.values())

    def summary(self) -> dict[str, int]:
        """Flat counts for Dagster metadata / MLflow metrics."""
        return {
            "new": len(self.new),
            "changed": len(self.changed),
            "audience_changed": len(self.audience_changed),
            "unchanged": len(self.unchanged),
            "deleted": len(self.deleted),
            "rejected": self.rejected_count,
            "total_documents": self.total_documents,
            **{f"rejected_{reason}": n for reason, n in sorted(self.rejected_by_reason.items())},
        }


def ensure_tables(con: Warehouse | Any) -> None:
    warehouse = as_warehouse(con)
    warehouse.ensure_schema(SCHEMA)
    warehouse.execute(_DOCUMENTS_DDL)
    warehouse.execute(_DOCUMENTS_MIGRATE)
    warehouse.execute(_REJECTED_DDL)
    warehouse.execute(_WATERMARKS_DDL)


def _rej_table(rejected: Iterable[Rejected]) -> pa.Table:
    rows = [r.as_row() for r in rejected]
    return pa.Table.from_pylist(rows, schema=_REJ_SCHEMA)


def _ids_table(ids: Iterable[str]) -> pa.Table:
    return pa.table({"doc_id": pa.array(sorted(set(ids)), type=pa.string())})


def _file_of(natural_key: str, metadata: str | None) -> str:
    """The file a document came from (records of an export share one file)."""
    if metadata:
        try:
            path = json.loads(metadata).get("path")
        except (ValueError, AttributeError):
            path = None
        if path:
            return str(path)
    return natural_key


class _Stored(NamedTuple):
    source: str
    natural_key: str
    content_hash: str
    metadata: str | None
    allowed_groups: list[str]


def sync_documents(
    con: Warehouse | Any,
    batch: NormalizedBatch,
    *,
    current_files: Mapping[str, set[str]] | None = None,
    watermarks: Mapping[str, str] | None = None,
    audiences: Mapping[str, AudienceResolver] | None = None,
) -> DocumentsDelta:
    """Upsert ``batch`` and return the delta.

    ``current_files`` maps a file source name to the relative paths that exist now (see
    ``list_current_files``); documents and rejections of other files of that source are deleted.
    ``watermarks`` (raw table → last dlt load id processed) is saved in the same transaction.
    ``audiences`` maps a file source name to its path → groups rule: stored documents of that
    source that no raw row brought back are re-resolved, because an edited ``sources.yaml``
    changes who may read a file without touching the file (so dlt never re-reads it).
    """
    con = as_warehouse(con)
    ensure_tables(con)
    # Later rows win if a batch holds the same id twice (a file re-read in two loads).
    incoming: dict[str, Document] = {d.doc_id: d for d in batch.documents}
    rejected: dict[str, Rejected] = {
        r.doc_id: r for r in batch.rejected if r.doc_id not in incoming
    }

    existing: dict[str, _Stored] = {
        row[0]: _Stored(row[1], row[2], row[3], row[4], list(row[5] or [PUBLIC]))
        for row in con.fetchall(
            "SELECT doc_id, source, natural_key, content_hash, metadata, allowed_groups "
            f"FROM {DOCUMENTS_TABLE}"
        )
    }

    delta = DocumentsDelta(rejected_by_reason=dict(Counter(r.reason for r in rejected.values())))
    for doc_id, doc in incoming.items():
        old = existing.get(doc_id)
        if old is None:
            delta.new.append(doc_id)
        elif old.content_hash != doc.content_hash:
            delta.changed.append(doc_id)
        elif old.allowed_groups != list(doc.allowed_groups):
            delta.changed.append(doc_id)
            delta.audience_changed.append(doc_id)
        else:
            delta.unchanged.append(doc_id)

    deleted: set[str] = {doc_id for doc_id in rejected if doc_id in existing}
    for doc_id, old in existing.items():
        if doc_id in incoming:
            continue
        path = _file_of(old.natural_key, old.metadata)
        if (old.source, path) in batch.files:
            deleted.add(doc_id)  # the file was re-read and no longer yields this document
        elif (
            current_files and old.source in current_files and path not in current_files[old.source]
        ):
            deleted.add(doc_id)  # the file is gone
    delta.deleted = sorted(deleted)

    regrouped: dict[str, list[str]] = {}
    for doc_id, old in existing.items():
        resolver = (audiences or {}).get(old.source)
        if resolver is None or doc_id in incoming or doc_id in deleted:
            continue
        groups = normalize_audience(resolver(_file_of(old.natural_key, old.metadata)))
        if groups != old.allowed_groups:
            regrouped[doc_id] = groups
    delta.changed.extend(regrouped)
    delta.audience_changed.extend(regrouped)

    vanished_rejections: list[str] = []
    if current_files:
        for doc_id, source, natural_key in con.fetchall(
            f"SELECT doc_id, source, natural_key FROM {REJECTED_TABLE}"
        ):
            files = current_files.get(source)
            file_key = natural_key.split("#", 1)[0]
            if files is not None and natural_key not in files and file_key not in files:
                vanished_rejections.append(doc_id)

    doc_rows = [d.as_row() for d in incoming.values()]
    if regrouped:
        # Rewritten whole (delete + insert below) rather than UPDATEd: the same path as every
        # other write here, inside the one transaction.
        for row in read_documents(con, regrouped).to_pylist():
            row["allowed_groups"] = regrouped[row["doc_id"]]
            doc_rows.append(row)
    docs_table = pa.Table.from_pylist(doc_rows, schema=_DOC_SCHEMA)
    rej_table = _rej_table(rejected.values())
    remove_docs = _ids_table([*incoming, *deleted, *regrouped])
    remove_rej = _ids_table([*incoming, *rejected, *vanished_rejections])
    with (
        con.transaction(),
        con.temp_table("_remove_docs", remove_docs),
        con.temp_table("_remove_rej", remove_rej),
    ):
        con.execute(
            f"DELETE FROM {DOCUMENTS_TABLE} WHERE doc_id IN (SELECT doc_id FROM _remove_docs)"
        )
        con.execute(
            f"DELETE FROM {REJECTED_TABLE} WHERE doc_id IN (SELECT doc_id FROM _remove_rej)"
        )
        con.insert_arrow(DOCUMENTS_TABLE, docs_table.select(list(DOCUMENT_FIELDS)))
        con.insert_arrow(REJECTED_TABLE, rej_table.select(list(REJECTED_FIELDS)))
        if watermarks:
            marks = pa.table(
                {
                    "raw_table": pa.array(list(watermarks), pa.string()),
                    "last_load_id": pa.array(list(watermarks.values()), pa.string()),
                }
            )
            con.upsert_arrow(WATERMARKS_TABLE, marks, ["raw_table"])
    delta.new.sort()
    delta.changed.sort()
    delta.audience_changed.sort()
    delta.unchanged.sort()
    delta.total_documents = int(con.scalar(f"SELECT count(*) FROM {DOCUMENTS_TABLE}"))
    return delta


def get_watermarks(con: Warehouse | Any) -> dict[str, str]:
    con = as_warehouse(con)
    ensure_tables(con)
    return dict(con.fetchall(f"SELECT raw_table, last_load_id FROM {WATERMARKS_TABLE}"))


def read_documents(con: Warehouse | Any, doc_ids: Iterable[str] | None = None) -> pa.Table:
    """Documents as Arrow (all, or the given ids): what the chunker reads."""
    con = as_warehouse(con)
    ensure_tables(con)
    if doc_ids is None:
        return con.query_arrow(f"SELECT * FROM {DOCUMENTS_TABLE} ORDER BY doc_id")
    with con.temp_table("_want", _ids_table(doc_ids)):
        return con.query_arrow(
            f"SELECT d.* FROM {DOCUMENTS_TABLE} d JOIN _want USING (doc_id) ORDER BY doc_id"
        )


def read_rejected(con: Warehouse | Any) -> pa.Table:
    con = as_warehouse(con)
    ensure_tables(con)
    return con.query_arrow(f"SELECT * FROM {REJECTED_TABLE} ORDER BY doc_id")
