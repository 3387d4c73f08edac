"""Stemming and ids-only hybrid against the real session node (tiny fixed index, 4-dim vectors).

The Python-stemmed route must find documents by inflected forms that the plain fields miss, and
the ids-only hybrid path (candidate ids + scores, then one ``ids`` fetch under the same access
clauses) must return exactly what the single-round-trip path returned: ids, order, scores, fields.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from elasticsearch import Elasticsearch

from llmops_dagster.access import Principal
from llmops_dagster.search.aliases import alias_indices, list_versions, rebuild
from llmops_dagster.search.mapping import (
    CORE_ENGLISH_ANALYZER,
    IndexSpec,
    build_index_body,
    index_meta,
)
from llmops_dagster.search.retriever import HybridRetriever, RetrieverConfig

pytestmark = pytest.mark.integration

# chunk_id, title, text, audience, vector: each vector points mostly along one axis.
ROWS: list[tuple[str, str, str, list[str], list[float]]] = [
    ("c-infect", "Fever in mice", "Infected mice developed a fever.", ["public"],
     [1.0, 0.1, 0.0, 0.0]),
    ("c-bread", "Baking", "Studies of bread baking at home.", ["public"], [0.1, 1.0, 0.0, 0.0]),
    ("c-run", "Marathons", "The running of marathons in summer.", ["public"],
     [0.0, 0.1, 1.0, 0.0]),
    ("c-salary", "Salary bands", "Salary studies for infected staff.", ["hr"],
     [0.9, 0.0, 0.1, 0.3]),
    ("c-volcano", "Volcanoes", "Lava and ash from an eruption.", ["public"],
     [0.0, 0.0, 0.2, 1.0]),
]  # fmt: skip


class _FixedEncoder:
    """Query vectors by text: no model needed for a 4-dim index."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray([self.vectors[t] for t in texts], dtype=np.float32)


@pytest.fixture(scope="module")
def stemmed_alias(es_client: Elasticsearch) -> Iterator[str]:
    alias = f"test-stem-{uuid.uuid4().hex[:10]}"
    # The core analyzer (no stemmer) forces the Python route even on a node with ``english``.
    body = build_index_body(IndexSpec(dims=4, model_id="fixed-4", analyzer=CORE_ENGLISH_ANALYZER))
    docs = [
        {"chunk_id": cid, "doc_id": f"doc:{cid}", "source": "fs", "title": title, "text": text,
         "allowed_groups": groups, "model_id": "fixed-4", "embedding": vector, "position": 0}
        for cid, title, text, groups, vector in ROWS
    ]  # fmt: skip
    # No stemming flag anywhere: the writer reads the route from the new index's _meta.
    rebuild(es_client, alias, iter(docs), len(docs), body, keep=0)
    try:
        yield alias
    finally:
        for name in set(list_versions(es_client, alias)) | set(alias_indices(es_client, alias)):
            es_client.indices.delete(index=name, ignore_unavailable=True)


def test_index_records_python_stemming_and_writer_fills_shadow_fields(
    es_client: Elasticsearch, stemmed_alias: str
) -> None:
    meta = index_meta(es_client, stemmed_alias)
    assert meta["text_stemming"] == "python"
    assert meta["stemmed_fields"] == ["title_stemmed", "text_stemmed"]
    source = es_client.get(index=stemmed_alias, id="c-run")["_source"]
    assert (source["title_stemmed"], source["text_stemmed"]) == (
        "marathon",
        "the run of marathon in summer",
    )


@pytest.mark.parametrize(
    ("query", "stemmed_ids"),
    [("runs", ["c-run"]), ("infections", ["c-infect"]), ("study", ["c-bread"])],
)
def test_python_stemmed_route_finds_inflected_forms_the_plain_fields_miss(
    es_client: Elasticsearch, stemmed_alias: str, query: str, stemmed_ids: list[str]
) -> None:
    stemmed = HybridRetriever(es_client, stemmed_alias)
    assert stemmed.bm25_fields() == ("title_stemmed", "text_stemmed")
    assert [h.chunk_id for h in stemmed.search(query, mode="bm25", k=10)] == stemmed_ids
    plain = HybridRetriever(
        es_client, stemmed_alias, config=RetrieverConfig(bm25_fields=("title", "text"))
    )
    assert plain.search(query, mode="bm25", k=10) == []
    # The access clause still applies on the stemmed fields: hr also sees its own chunk.
    hr = Principal("ana", frozenset({"hr"}))
    hr_ids = {h.chunk_id for h in stemmed.search(query, mode="bm25", k=10, principal=hr)}
    expected_hr = set(stemmed_ids) | ({"c-salary"} if query != "runs" else set())
    assert hr_ids == expected_hr


QUERIES = {
    "infected fever": [0.9, 0.2, 0.0, 0.1],
    "bread studies": [0.2, 0.9, 0.1, 0.0],
    "running lava": [0.0, 0.0, 0.8, 0.6],
}


@pytest.mark.parametrize("mode", ["hybrid_rrf", "hybrid_linear"])
@pytest.mark.parametrize("principal", [None, Principal("ana", frozenset({"hr"}))])
def test_ids_only_hybrid_returns_the_same_hits_as_the_inline_path(
    es_client: Elasticsearch, stemmed_alias: str, mode: str, principal: Principal | None
) -> None:
    encoder = _FixedEncoder(QUERIES)
    new = HybridRetriever(es_client, stemmed_alias, encoder)
    old = HybridRetriever(es_client, stemmed_alias, encoder, RetrieverConfig(ids_only_hybrid=False))
    queries = list(QUERIES)
    new_hits = new.search_many(queries, mode=mode, k=3, principal=principal)
    old_hits = old.search_many(queries, mode=mode, k=3, principal=principal)
    assert new_hits == old_hits  # ids, order, fused and per-list scores/ranks, all fields
    seen = {h.chunk_id for hits in new_hits for h in hits}
    assert ("c-salary" in seen) is (principal is not None)
    first = new_hits[0][0]
    assert (first.chunk_id, first.doc_id, first.title) == (
        "c-infect",
        "doc:c-infect",
        "Fever in mice",
    )
    assert first.metadata["allowed_groups"] == ["public"]
    assert first.bm25_rank == 1 and first.knn_rank == 1
