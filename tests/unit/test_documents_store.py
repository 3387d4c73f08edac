"""Upsert semantics of llmops.documents on DuckDB and PostgreSQL: the delta drives the chunker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from llmops_dagster.documents.document_table import (
    get_watermarks,
    read_documents,
    read_rejected,
    sync_documents,
)
from llmops_dagster.documents.normalize import NormalizedBatch, normalize_file_rows
from llmops_dagster.warehouse import Warehouse

pytestmark = pytest.mark.unit


def rows(files: dict[str, bytes]) -> NormalizedBatch:
    return normalize_file_rows(
        [
            {
                "relative_path": path,
                "file_url": f"file:///r/{path}",
                "modification_date": datetime(2026, 1, 1, tzinfo=UTC),
                "too_large": False,
                "content": data,
            }
            for path, data in files.items()
        ]
    )


def test_new_then_unchanged_then_changed(warehouse: Warehouse) -> None:
    first = sync_documents(warehouse, rows({"a.md": b"A", "b.md": b"B"}))
    assert (first.new, first.changed, first.unchanged, first.deleted) == (
        ["fs:a.md", "fs:b.md"],
        [],
        [],
        [],
    )
    again = sync_documents(warehouse, rows({"a.md": b"A", "b.md": b"B"}))
    assert (again.new, again.changed, again.unchanged) == ([], [], ["fs:a.md", "fs:b.md"])
    assert again.to_chunk == []
    edit = sync_documents(warehouse, rows({"a.md": b"A2"}))
    assert (edit.new, edit.changed, edit.unchanged, edit.to_chunk) == (
        [],
        ["fs:a.md"],
        [],
        ["fs:a.md"],
    )
    assert edit.total_documents == 2
    table = read_documents(warehouse, ["fs:a.md"])
    assert table.column("text").to_pylist() == ["A2"]
    assert warehouse.execute("SELECT count(*) FROM llmops.documents").fetchone() == (2,)


def test_file_that_turns_bad_is_deleted_and_rejected_then_recovers(
    warehouse: Warehouse,
) -> None:
    sync_documents(warehouse, rows({"a.md": b"fine"}))
    broken = sync_documents(warehouse, rows({"a.md": b"\x00\x01binary now"}))
    assert broken.deleted == ["fs:a.md"]
    assert broken.rejected_by_reason == {"binary": 1}
    assert read_documents(warehouse).num_rows == 0
    assert read_rejected(warehouse).column("reason").to_pylist() == ["binary"]
    fixed = sync_documents(warehouse, rows({"a.md": b"fine again"}))
    assert fixed.new == ["fs:a.md"]
    assert read_rejected(warehouse).num_rows == 0


def test_records_dropped_from_a_reread_export_are_deleted(warehouse: Warehouse) -> None:
    two = json.dumps([{"id": 1, "body": "x"}, {"id": 2, "body": "y"}]).encode()
    sync_documents(warehouse, rows({"e.json": two}))
    one = json.dumps([{"id": 1, "body": "x"}]).encode()
    delta = sync_documents(warehouse, rows({"e.json": one}))
    assert (delta.unchanged, delta.deleted) == (["fs:e.json#1"], ["fs:e.json#2"])


def test_vanished_files_are_deleted_with_their_rejections(warehouse: Warehouse) -> None:
    records = json.dumps([{"id": 1, "body": "x"}]).encode()
    sync_documents(warehouse, rows({"a.md": b"A", "b.md": b"B", "r.json": records, "bad.txt": b""}))
    assert read_rejected(warehouse).num_rows == 1
    delta = sync_documents(
        warehouse,
        NormalizedBatch(),
        current_files={"fs": {"a.md"}},
        watermarks={"raw.fs_files": "9"},
    )
    assert delta.deleted == ["fs:b.md", "fs:r.json#1"]
    assert delta.total_documents == 1
    assert read_rejected(warehouse).num_rows == 0
    assert get_watermarks(warehouse) == {"raw.fs_files": "9"}


def test_other_sources_are_untouched_by_file_deletions(warehouse: Warehouse) -> None:
    sync_documents(warehouse, rows({"a.md": b"A"}))
    delta = sync_documents(warehouse, NormalizedBatch(), current_files={"other": set()})
    assert delta.deleted == []
    assert delta.summary()["total_documents"] == 1


# --- audiences ----------------------------------------------------------------------------------
def _groups(warehouse: Warehouse) -> dict[str, list[str]]:
    table = read_documents(warehouse).select(["doc_id", "allowed_groups"]).to_pylist()
    return {row["doc_id"]: row["allowed_groups"] for row in table}


def test_an_audience_change_alone_is_a_change_but_not_a_text_change(
    warehouse: Warehouse,
) -> None:
    sync_documents(warehouse, rows({"a.md": b"A", "hr/b.md": b"B"}))
    hr_rule = {"fs": lambda path: ["hr"] if path.startswith("hr/") else ["public"]}
    # Files not re-read (dlt saw no change): the stored documents are re-resolved.
    moved = sync_documents(warehouse, NormalizedBatch(), audiences=hr_rule)
    assert (moved.new, moved.changed, moved.audience_changed, moved.unchanged) == (
        [],
        ["fs:hr/b.md"],
        ["fs:hr/b.md"],
        [],
    )
    assert moved.summary()["audience_changed"] == 1
    assert _groups(warehouse) == {"fs:a.md": ["public"], "fs:hr/b.md": ["hr"]}
    assert read_documents(warehouse, ["fs:hr/b.md"]).column("text").to_pylist() == ["B"]
    again = sync_documents(warehouse, NormalizedBatch(), audiences=hr_rule)
    assert (again.changed, again.audience_changed) == ([], [])

    # A re-read file whose rule changed is reported the same way (text hash unchanged).
    reread = normalize_file_rows(
        [
            {
                "relative_path": "hr/b.md",
                "file_url": "file:///r/hr/b.md",
                "modification_date": datetime(2026, 1, 2, tzinfo=UTC),
                "too_large": False,
                "content": b"B",
            }
        ],
        audience=lambda path: ["hr", "security"],
    )
    widened = sync_documents(warehouse, reread)
    assert (widened.changed, widened.audience_changed, widened.unchanged) == (
        ["fs:hr/b.md"],
        ["fs:hr/b.md"],
        [],
    )
    assert _groups(warehouse)["fs:hr/b.md"] == ["hr", "security"]


def test_a_documents_table_from_before_access_control_is_migrated_as_public(
    warehouse: Warehouse,
) -> None:
    warehouse.execute("CREATE SCHEMA llmops")
    warehouse.execute(
        "CREATE TABLE llmops.documents (doc_id VARCHAR PRIMARY KEY, source VARCHAR NOT NULL, "
        "natural_key VARCHAR NOT NULL, title VARCHAR, text VARCHAR NOT NULL, uri VARCHAR, "
        "format VARCHAR, updated_at TIMESTAMPTZ, content_hash VARCHAR NOT NULL, metadata VARCHAR)"
    )
    warehouse.execute(
        "INSERT INTO llmops.documents VALUES "
        "('fs:old.md', 'fs', 'old.md', 'Old', 'old', 'u', 'md', now(), 'h', '{}')"
    )
    delta = sync_documents(warehouse, rows({"a.md": b"A"}))
    assert delta.new == ["fs:a.md"] and delta.total_documents == 2
    assert _groups(warehouse) == {"fs:a.md": ["public"], "fs:old.md": ["public"]}
