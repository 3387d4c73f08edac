"""Concurrent search clients against the real node through the retriever: zero errors."""

from __future__ import annotations

import uuid

import pytest
from elasticsearch import Elasticsearch

from llmops_dagster.config import Settings
from llmops_dagster.embed.model import load_embedder
from llmops_dagster.search.aliases import rebuild
from llmops_dagster.search.load import run_load
from llmops_dagster.search.mapping import IndexSpec, build_index_body
from llmops_dagster.search.retriever import HybridRetriever
from tests.conftest import drop_indices

pytestmark = pytest.mark.integration

TEXTS = [
    "Swap the drone battery within 90 seconds at the depot.",
    "Expense reports are due on the fifth working day.",
    "The on-call engineer acknowledges pages within 10 minutes.",
    "Lost link: the drone climbs to 120 m and returns home.",
    "Rotate the gatehouse TLS certificate every 60 days.",
]


def test_four_clients_for_three_seconds_without_errors(es_client: Elasticsearch) -> None:
    embedder = load_embedder(Settings().models.embedding_model)
    alias = f"load-{uuid.uuid4().hex[:8]}"
    vectors = embedder.encode(TEXTS)
    docs = [
        {"chunk_id": f"c{i}", "doc_id": f"fs:doc{i}.md", "text": t, "embedding": v,
         "position": 0, "model_id": embedder.model_id}
        for i, (t, v) in enumerate(zip(TEXTS, vectors, strict=True))
    ]  # fmt: skip
    body = build_index_body(IndexSpec(dims=embedder.dims, model_id=embedder.model_id))
    try:
        rebuild(es_client, alias, docs, expected_count=len(docs), index_body=body)
        retriever = HybridRetriever(es_client, alias, embedder)
        report = run_load(
            retriever,
            ["battery swap", "expenses deadline", "pager", "lost link", "certificate"],
            clients=4,
            duration_s=3.0,
            max_requests=400,
        )
        summary = report.summary()
        assert report.errors == 0, report.first_errors
        assert report.requests >= 20
        assert 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"]
        assert report.seconds < 30  # bounded: it stops by itself
    finally:
        drop_indices(es_client, alias)
