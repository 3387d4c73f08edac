"""A hostile folder through the whole indexing path: good files indexed, bad ones rejected with
their reason, nothing crashes; running it twice changes nothing and duplicates nothing."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from llmops_dagster.config import Settings
from llmops_dagster.sources.source_config import FilesystemSourceConfig, SourcesConfig
from tests.conftest import asset_metadata, drop_indices
from tests.support.dagster import materialize_groups

pytestmark = pytest.mark.integration


def _hostile_folder(root: Path, sample_dir: Path) -> None:
    shutil.copytree(sample_dir / "runbooks", root / "runbooks")  # 10 good documents
    shutil.copy(root / "runbooks" / "lost-link.txt", root / "copy-of-lost-link.txt")  # duplicate
    (root / "binary.txt").write_bytes(bytes(range(256)) * 40)
    (root / "empty.md").write_text("")
    (root / "latin1.txt").write_bytes("Café crème, déjà vu".encode("latin-1"))
    (root / "huge.txt").write_bytes(b"all work and no play. " * 1_000_000)  # ~21 MB > 10 MB cap
    (root / "one-line.md").write_text("# One line\n\n" + "word " * 1_000_000)  # a 5 MB line
    (root / "broken.html").write_text("<html><body><h1>Half a page<p>still useful text <b>")
    (root / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ngarbage")


def test_hostile_folder_is_indexed_or_rejected_with_reasons(
    tmp_settings: Settings,
    es_settings: Settings,
    es_client: Elasticsearch,
    sample_dir: Path,
    tmp_path: Path,
) -> None:
    root = tmp_path / "hostile"
    _hostile_folder(root, sample_dir)
    alias = f"hostile-{uuid.uuid4().hex[:8]}"
    settings = tmp_settings.override(
        elasticsearch={"url": es_settings.elasticsearch.url, "index_alias": alias}
    )
    sources = SourcesConfig(filesystem=FilesystemSourceConfig(root=root))

    try:
        first = materialize_groups(settings, sources)
        docs = asset_metadata(first, "documents")
        assert docs["rejected_binary"] == 1
        assert docs["rejected_empty"] == 1
        assert docs["rejected_undecodable"] == 1
        assert docs["rejected_too_large"] == 1
        assert docs["rejected_broken_pdf"] == 1
        assert docs["rejected"] == 5
        # 10 runbooks + a duplicate under another name + the 5 MB line + broken-but-readable HTML
        assert docs["total_documents"] == 13
        index = asset_metadata(first, "search_index")
        chunks = asset_metadata(first, "chunks")
        assert index["doc_count"] == chunks["active_chunks"]
        # The duplicate file is its own document, but its text is embedded only once.
        embeddings = asset_metadata(first, "embeddings")
        assert embeddings["distinct_texts"] < embeddings["active_chunks"]
        hits = es_client.search(index=alias, query={"term": {"doc_id": "fs:broken.html"}}, size=5)[
            "hits"
        ]["hits"]
        assert hits and "still useful text" in hits[0]["_source"]["text"]

        second = materialize_groups(settings, sources)
        again = asset_metadata(second, "search_index")
        assert (again["indexed"], again["deleted"]) == (0, 0)
        assert again["doc_count"] == index["doc_count"]
        ids = [h["_id"] for h in es_client.search(index=alias, size=10_000)["hits"]["hits"]]
        assert len(ids) == len(set(ids)) == index["doc_count"]
    finally:
        drop_indices(es_client, alias)
