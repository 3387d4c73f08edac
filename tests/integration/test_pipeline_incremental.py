"""Sources → documents → chunks → embeddings through real Dagster, dlt, DuckDB and the model.

The sample corpus is copied to a temp folder so the tests can edit and delete files.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import duckdb
import pytest

from llmops_dagster.config import Settings
from llmops_dagster.sources.source_config import FilesystemSourceConfig, SourcesConfig
from tests.conftest import asset_metadata
from tests.support.dagster import PREPARE_GROUPS, materialize_groups

pytestmark = pytest.mark.integration


def _bump_mtime(path: Path) -> None:
    later = time.time() + 5
    os.utime(path, (later, later))


@pytest.fixture
def corpus(tmp_path: Path, sample_dir: Path) -> Path:
    root = tmp_path / "corpus"
    shutil.copytree(sample_dir, root)
    return root


def _doc_chunks(settings: Settings, doc_id: str, status: str = "active") -> set[str]:
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        rows = con.execute(
            "SELECT chunk_id FROM llmops.chunks WHERE doc_id = ? AND status = ?", [doc_id, status]
        ).fetchall()
    return {r[0] for r in rows}


def test_incremental_pipeline_on_the_sample_corpus(tmp_settings: Settings, corpus: Path) -> None:
    sources = SourcesConfig(filesystem=FilesystemSourceConfig(root=corpus))

    first = materialize_groups(tmp_settings, sources, PREPARE_GROUPS)
    asset_metadata(first, "fs/files")  # the dlt asset materialized (exactly once)
    docs = asset_metadata(first, "documents")
    chunks = asset_metadata(first, "chunks")
    emb = asset_metadata(first, "embeddings")
    n_docs = docs["total_documents"]
    assert 40 <= n_docs <= 60
    assert docs["new"] == n_docs and docs["rejected"] == 0
    assert chunks["docs_chunked"] == n_docs
    assert chunks["active_chunks"] >= n_docs
    assert emb["embedded"] == emb["distinct_texts"] > 0
    assert emb["dims"] == 384

    # Unchanged second run: nothing re-read, re-chunked or re-embedded.
    second = materialize_groups(tmp_settings, sources, PREPARE_GROUPS)
    assert asset_metadata(second, "documents")["new"] == 0
    assert asset_metadata(second, "documents")["changed"] == 0
    assert asset_metadata(second, "chunks")["docs_chunked"] == 0
    assert asset_metadata(second, "embeddings")["embedded"] == 0
    assert asset_metadata(second, "embeddings")["cached"] == emb["distinct_texts"]

    # Change one file: only that document is re-chunked, only its new chunk texts embedded.
    target = corpus / "runbooks" / "battery-swap.txt"
    doc_id = "fs:runbooks/battery-swap.txt"
    before = _doc_chunks(tmp_settings, doc_id)
    target.write_text(
        target.read_text() + "\n\nStep 99: log the swap in Roost within 10 minutes.\n"
    )
    _bump_mtime(target)
    third = materialize_groups(tmp_settings, sources, PREPARE_GROUPS)
    assert asset_metadata(third, "documents")["changed"] == 1
    assert asset_metadata(third, "documents")["new"] == 0
    chunks3 = asset_metadata(third, "chunks")
    assert chunks3["docs_chunked"] == 1
    after = _doc_chunks(tmp_settings, doc_id)
    added = after - before
    assert chunks3["chunks_added"] == len(added) >= 1
    assert chunks3["chunks_removed"] == len(before - after)
    assert _doc_chunks(tmp_settings, doc_id, "removed") == before - after
    # Exactly the new chunk texts are embedded (none of the other documents' chunks).
    assert asset_metadata(third, "embeddings")["embedded"] == len(added)

    # Delete a file: its chunks are marked removed; nothing is embedded.
    gone = corpus / "policies" / "travel.html"
    gone_id = "fs:policies/travel.html"
    gone_chunks = _doc_chunks(tmp_settings, gone_id)
    assert gone_chunks
    gone.unlink()
    fourth = materialize_groups(tmp_settings, sources, PREPARE_GROUPS)
    assert asset_metadata(fourth, "documents")["deleted"] == 1
    chunks4 = asset_metadata(fourth, "chunks")
    assert chunks4["docs_removed"] == 1
    assert chunks4["chunks_removed"] == len(gone_chunks)
    assert _doc_chunks(tmp_settings, gone_id) == set()
    assert _doc_chunks(tmp_settings, gone_id, "removed") == gone_chunks
    assert asset_metadata(fourth, "embeddings")["embedded"] == 0
    assert chunks4["active_chunks"] == chunks3["active_chunks"] - len(gone_chunks)


def test_pii_is_redacted_before_chunking(tmp_settings: Settings, corpus: Path) -> None:
    sources = SourcesConfig(filesystem=FilesystemSourceConfig(root=corpus))
    materialize_groups(tmp_settings, sources, PREPARE_GROUPS)
    with duckdb.connect(str(tmp_settings.duckdb_path), read_only=True) as con:
        texts = " ".join(r[0] for r in con.execute("SELECT text FROM llmops.chunks").fetchall())
    for secret in (
        "priya.raman@example.com",
        "(555) 010-4477",
        "4111 1111 1111 1111",
        "10.20.30.40",
        "198.51.100.23",
    ):
        assert secret not in texts, secret
    assert "[EMAIL]" in texts and "[PHONE]" in texts and "[CARD]" in texts and "[IP]" in texts
