"""End to end through real dlt loads into DuckDB: malformed inputs are rejected with the right
reason while good ones become documents; later runs touch only what changed."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import duckdb
import pytest
import yaml

from llmops_dagster.config import Settings
from llmops_dagster.documents import build_documents
from llmops_dagster.documents.document_table import read_documents, read_rejected
from llmops_dagster.sources.dlt_pipelines import make_pipeline, run_pipeline
from llmops_dagster.sources.filesystem import make_filesystem_source
from llmops_dagster.sources.source_config import (
    FilesystemSourceConfig,
    RestApiSourceConfig,
    SourcesConfig,
    SqlSourceConfig,
)
from llmops_dagster.sources.sql import make_sql_source_from_config
from llmops_dagster.warehouse import connect
from tests.unit.doc_fixtures import BROKEN_PDF, make_pdf

pytestmark = pytest.mark.integration

MAX_BYTES = 64 * 1024


def _write(path: Path, data: bytes, bump: float = 0.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if bump:
        stamp = time.time() + bump
        os.utime(path, (stamp, stamp))


def build_malformed_folder(root: Path) -> None:
    _write(root / "good.md", b"# Good\n\nA fine markdown document.\n")
    _write(
        root / "site" / "tolerant.html",
        b"<html><head><title>Tolerant</title></head><body><nav>menu</nav>"
        b"<h1>Heading<p>unclosed paragraph<li>stray item<table><td>cell",
    )
    _write(root / "manual.pdf", make_pdf(["Operating manual", "Step one"], title="Manual"))
    records = [{"id": "q1", "title": "Q1", "body": "a1"}, {"id": "q2", "title": "Q2"}]
    _write(root / "export" / "faq.json", json.dumps(records).encode())
    _write(root / "export" / "people.csv", b"id,name,role\n1,Ada,eng\n2,Lin,ops\n")
    # The bad ones, one per reason.
    _write(root / "binary.txt", b"\x7fELF\x02\x01\x01\x00\x00\x00" * 20)
    _write(root / "empty.md", b"")
    _write(root / "latin1.txt", "Café crème, naïve façade".encode("latin-1"))
    _write(root / "huge.md", b"# big\n" + b"x" * (MAX_BYTES + 1))
    _write(root / "broken.html", b'<html><body><div title="never closed, all text inside')
    _write(root / "broken.pdf", BROKEN_PDF)


def _build(settings: Settings, sources: SourcesConfig, **kwargs):
    with connect(settings.duckdb_path) as con:
        return build_documents(con, sources, dataset=settings.warehouse.dlt_dataset, **kwargs)


def test_malformed_folder_then_incremental_changes(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    build_malformed_folder(root)
    settings = Settings(home=tmp_path / "home")
    sources = SourcesConfig(filesystem=FilesystemSourceConfig(root=root, max_bytes=MAX_BYTES))
    pipeline = make_pipeline(settings.warehouse_target(), "docs_e2e_test")

    def load() -> dict[str, int]:
        return run_pipeline(pipeline, make_filesystem_source(root, max_bytes=MAX_BYTES))[1]

    assert load() == {"fs_files": 11}
    delta = _build(settings, sources, transform=redact_ada)
    assert delta.new == [
        "fs:export/faq.json#q1",
        "fs:export/faq.json#q2",
        "fs:export/people.csv#1",
        "fs:export/people.csv#2",
        "fs:good.md",
        "fs:manual.pdf",
        "fs:site/tolerant.html",
    ]
    assert delta.rejected_by_reason == {
        "binary": 1,
        "empty": 1,
        "undecodable": 1,
        "too_large": 1,
        "broken_html": 1,
        "broken_pdf": 1,
    }
    assert (delta.changed, delta.unchanged, delta.deleted, delta.total_documents) == ([], [], [], 7)

    con = duckdb.connect(str(settings.duckdb_path))
    try:
        docs = {r["doc_id"]: r for r in read_documents(con).to_pylist()}
        rejected = {r["natural_key"]: r["reason"] for r in read_rejected(con).to_pylist()}
    finally:
        con.close()
    assert rejected == {
        "binary.txt": "binary",
        "empty.md": "empty",
        "latin1.txt": "undecodable",
        "huge.md": "too_large",
        "broken.html": "broken_html",
        "broken.pdf": "broken_pdf",
    }
    html = docs["fs:site/tolerant.html"]
    assert html["title"] == "Tolerant" and html["format"] == "html"
    assert "# Heading" in html["text"] and "unclosed paragraph" in html["text"]
    assert "menu" not in html["text"]
    assert docs["fs:manual.pdf"]["text"] == "Operating manual\nStep one"
    assert "[NAME]" in docs["fs:export/people.csv#1"]["text"]  # the transform hook ran
    assert docs["fs:good.md"]["updated_at"].tzinfo is not None

    # Unchanged folder: dlt loads nothing, the documents step reads nothing.
    assert load() == {}
    idle = _build(settings, sources)
    assert idle.summary()["new"] == idle.summary()["changed"] == idle.summary()["deleted"] == 0
    assert idle.unchanged == [] and idle.total_documents == 7

    # Edit one, delete one, fix one bad file, drop a record from the export.
    _write(root / "good.md", b"# Good\n\nEdited text.\n", bump=5)
    (root / "site" / "tolerant.html").unlink()
    _write(root / "binary.txt", b"now plain text", bump=5)
    _write(root / "export" / "faq.json", json.dumps(records_q1()).encode(), bump=5)
    assert load() == {"fs_files": 3}
    delta = _build(settings, sources)
    assert delta.new == ["fs:binary.txt"]
    assert delta.changed == ["fs:good.md"]
    assert delta.unchanged == ["fs:export/faq.json#q1"]
    assert delta.deleted == ["fs:export/faq.json#q2", "fs:site/tolerant.html"]
    assert delta.to_chunk == ["fs:binary.txt", "fs:good.md"]
    assert delta.rejected_by_reason == {}
    assert delta.total_documents == 6

    con = duckdb.connect(str(settings.duckdb_path))
    try:
        remaining = sorted(r["natural_key"] for r in read_rejected(con).to_pylist())
    finally:
        con.close()
    assert remaining == ["broken.html", "broken.pdf", "empty.md", "huge.md", "latin1.txt"]

    # A full refresh (e.g. the cleaning transform changed) re-reads all raw rows but keeps ids.
    full = _build(settings, sources, transform=redact_ada, full_refresh=True)
    assert (full.new, full.changed, full.deleted) == ([], [], [])
    assert len(full.unchanged) == 6 and full.total_documents == 6
    # ...and a different transform shows up as changed documents, for the chunker to redo.
    retransformed = _build(settings, sources, full_refresh=True)
    assert retransformed.changed == ["fs:export/people.csv#1"]


def redact_ada(text: str) -> str:
    return text.replace("Ada", "[NAME]")


def records_q1() -> list[dict[str, str]]:
    return [{"id": "q1", "title": "Q1", "body": "a1"}]


def test_sql_and_api_rows_become_record_documents(tmp_path: Path) -> None:
    db = tmp_path / "kb.db"
    src = sqlite3.connect(db)
    src.execute(
        "CREATE TABLE faq (faq_id INTEGER PRIMARY KEY, question TEXT, answer TEXT,"
        " updated_at TIMESTAMP)"
    )
    src.executemany(
        "INSERT INTO faq VALUES (?, ?, ?, ?)",
        [
            (1, "How?", "Like this.", "2026-01-01 00:00:00"),
            (2, "Why?", None, "2026-01-02 00:00:00"),
        ],
    )
    src.commit()
    src.close()
    api_yaml = tmp_path / "api.yaml"
    api_yaml.write_text(
        yaml.safe_dump(
            {
                "name": "kb",
                "client": {"base_url": "https://kb.example.com/v1/"},
                "resources": [
                    {
                        "name": "articles",
                        "records": {"text_fields": ["body"], "title_field": "headline"},
                    }
                ],
            }
        )
    )
    sources = SourcesConfig.model_validate(
        {
            "sql": {
                "url": f"sqlite:///{db}",
                "tables": [
                    {
                        "name": "faq",
                        "primary_key": "faq_id",
                        "records": {
                            "id_field": "faq_id",
                            "title_field": "question",
                            "text_fields": ["question", "answer"],
                        },
                    }
                ],
            },
            "rest_api": RestApiSourceConfig(config_path=api_yaml).model_dump(),
        }
    )
    settings = Settings(home=tmp_path / "home")
    assert isinstance(sources.sql, SqlSourceConfig)
    sql_pipeline = make_pipeline(settings.warehouse_target(), "sql_docs_test")
    assert run_pipeline(sql_pipeline, make_sql_source_from_config(sources.sql))[1] == {"sql_faq": 2}
    # API rows as dlt would load them (the HTTP path is covered in test_sources_rest_api).
    api_pipeline = make_pipeline(settings.warehouse_target(), "api_docs_test")
    api_pipeline.run(
        [{"id": 7, "headline": "Seven", "body": "About seven."}],
        table_name="api_articles",
        primary_key="id",
        write_disposition="merge",
    )

    delta = _build(settings, sources)
    assert delta.new == ["kb:articles#7", "sql:faq#1", "sql:faq#2"]
    con = duckdb.connect(str(settings.duckdb_path))
    try:
        docs = {r["doc_id"]: r for r in read_documents(con).to_pylist()}
    finally:
        con.close()
    assert docs["sql:faq#1"]["text"] == "How?\n\nLike this."
    assert docs["sql:faq#1"]["title"] == "How?"
    assert docs["sql:faq#1"]["uri"] == "faq#1"
    assert docs["sql:faq#2"]["text"] == "Why?"
    assert docs["kb:articles#7"]["title"] == "Seven"
    assert docs["kb:articles#7"]["uri"] == "https://kb.example.com/v1/articles#7"
    assert docs["kb:articles#7"]["format"] == "record"
    assert _build(settings, sources).new == []
