"""Search against the real Elasticsearch node: writer, versioned aliases, retrieval modes.

Every test works on its own uniquely named alias (and its ``<alias>-<version>`` indices) and
deletes them afterwards, so tests can run in parallel with other suites on the same node.
Embeddings come from the real default model, loaded once per module.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from elasticsearch import Elasticsearch

from llmops_dagster.config import Settings
from llmops_dagster.embed.model import Embedder, load_embedder
from llmops_dagster.search.aliases import (
    RebuildError,
    RollbackError,
    alias_indices,
    current_index,
    list_versions,
    point_alias,
    rebuild,
    rollback,
)
from llmops_dagster.search.mapping import (
    IndexSpec,
    build_index_body,
    index_meta,
    mapped_vector_dims,
)
from llmops_dagster.search.retriever import HybridRetriever, SearchMode
from llmops_dagster.search.writer import IndexingError, write_chunks
from tests.conftest import drop_indices
from tests.support.search import index_document

pytestmark = pytest.mark.integration

# (source, natural key, title, text): distinct topics so each mode has an obvious answer.
CORPUS: list[tuple[str, str, str, str]] = [
    ("fs", "cats.md", "Cats", "Cats are small domesticated felines that purr and hunt mice."),
    ("fs", "dogs.md", "Dogs", "Dogs are loyal canines; they bark and love long walks in the park."),
    ("fs", "bread.md", "Baking bread", "Knead the dough, let the yeast rise, bake at 220 degrees."),
    ("api", "volcano", "Volcanoes", "Magma erupts from a volcano as lava and volcanic ash."),
    ("api", "ocean", "Oceans", "Tides in the ocean follow the gravitational pull of the moon."),
    ("sql", "python", "Python", "Python is a programming language with dynamic typing."),
    ("sql", "tax", "Taxes", "Income tax returns are filed every year before the deadline."),
    ("fs", "piano.md", "Piano", "A piano has 88 keys; practising scales improves technique."),
]


def make_docs(embedder: Embedder, rows: list[tuple[str, str, str, str]] = CORPUS) -> list[dict]:
    vectors = embedder.encode([f"{title} {text}" for _, _, title, text in rows])
    return [
        index_document(f"{source}:{key}", 0, text, vector, model_id=embedder.model_id,
                       title=title, uri=f"{source}://{key}")
        for (source, key, title, text), vector in zip(rows, vectors, strict=True)
    ]  # fmt: skip


def unique_alias() -> str:
    return f"test-search-{uuid.uuid4().hex[:10]}"


def failing_after(docs: list[dict], n: int) -> Iterator[dict]:
    """Yields ``n`` documents, then raises: a load that dies half-way."""
    for i, doc in enumerate(docs):
        if i == n:
            raise RuntimeError("source died mid-load")
        yield doc


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def embedder(es_settings: Settings) -> Embedder:
    return load_embedder(es_settings.models.embedding_model)


@pytest.fixture(scope="module")
def docs(embedder: Embedder) -> list[dict]:
    return make_docs(embedder)


@pytest.fixture(scope="module")
def index_body(es_client: Elasticsearch, embedder: Embedder) -> dict:
    spec = IndexSpec(dims=embedder.dims, model_id=embedder.model_id)
    return build_index_body(spec, client=es_client)


@pytest.fixture
def alias(es_client: Elasticsearch) -> Iterator[str]:
    name = unique_alias()
    yield name
    drop_indices(es_client, name)


@pytest.fixture(scope="module")
def search_alias(
    es_client: Elasticsearch, docs: list[dict], index_body: dict, embedder: Embedder
) -> Iterator[str]:
    """One loaded alias shared by the read-only retrieval tests."""
    name = unique_alias()
    rebuild(es_client, name, docs, len(docs), index_body, smoke_query_vector=docs[0]["embedding"])
    yield name
    drop_indices(es_client, name)


def _count(client: Elasticsearch, index: str) -> int:
    client.indices.refresh(index=index)
    return int(client.count(index=index)["count"])


def _ids(client: Elasticsearch, index: str) -> set[str]:
    client.indices.refresh(index=index)
    response = client.search(index=index, size=1000, source=False)
    return {hit["_id"] for hit in response["hits"]["hits"]}


# --- mapping -------------------------------------------------------------------------------------
def test_index_mapping_dims_meta_and_detected_analyzer(
    es_client: Elasticsearch, alias: str, docs: list[dict], index_body: dict, embedder: Embedder
) -> None:
    rebuild(es_client, alias, docs, len(docs), index_body)
    assert mapped_vector_dims(es_client, alias) == embedder.dims
    meta = index_meta(es_client, alias)
    assert meta["model_id"] == embedder.model_id
    assert meta["dims"] == embedder.dims
    assert meta["chunk_count"] == len(docs)
    assert len(meta["chunk_set_digest"]) == 64
    mapping = es_client.indices.get_mapping(index=alias).body
    props = next(iter(mapping.values()))["mappings"]["properties"]
    assert props["embedding"]["index_options"]["type"] == "bbq_hnsw"
    assert props["embedding"]["index_options"]["rescore_vector"] == {"oversample": 3.0}
    assert props["embedding"]["similarity"] == "cosine"
    assert props["chunk_id"]["type"] == "keyword"
    assert props["position"]["type"] == "integer"
    # This node has no analysis-common: the analyzer must be one it really offers.
    assert props["text"]["analyzer"] in {"english", "llmops_english_core", "standard"}
    settings = next(iter(es_client.indices.get_settings(index=alias).body.values()))
    assert settings["settings"]["index"]["number_of_replicas"] == "0"


# --- writer: incremental upsert/delete and partial failures --------------------------------------
def test_incremental_upsert_and_delete_leave_exact_counts(
    es_client: Elasticsearch, alias: str, docs: list[dict], index_body: dict
) -> None:
    rebuild(es_client, alias, docs[:5], 5, index_body)
    # Re-sending the same chunks is idempotent; new chunks are added; removed ones deleted.
    report = write_chunks(
        es_client,
        alias,
        docs[3:8],
        delete_ids=[docs[0]["chunk_id"], docs[1]["chunk_id"], "never-indexed-id"],
        require_alias=True,
        refresh=True,
    )
    assert (report.indexed, report.deleted, report.delete_not_found, report.failed) == (5, 2, 1, 0)
    assert _ids(es_client, alias) == {d["chunk_id"] for d in docs[2:8]}
    assert _count(es_client, alias) == 6
    # A changed document: old chunk id out, new chunk id in; count unchanged.
    changed = dict(docs[2], text="Knead the dough twice.", chunk_id="c" * 32)
    write_chunks(es_client, alias, [changed], delete_ids=[docs[2]["chunk_id"]], refresh=True)
    assert _count(es_client, alias) == 6
    assert "c" * 32 in _ids(es_client, alias)


def test_incremental_write_to_missing_alias_fails_instead_of_creating_an_index(
    es_client: Elasticsearch, alias: str, docs: list[dict]
) -> None:
    with pytest.raises(IndexingError) as info:
        write_chunks(es_client, alias, docs[:1], require_alias=True)
    assert "index_not_found" in str(info.value) or "alias" in str(info.value)
    assert not es_client.indices.exists(index=alias)


def test_poisoned_documents_report_their_ids_and_causes_while_others_are_indexed(
    es_client: Elasticsearch, alias: str, docs: list[dict], index_body: dict
) -> None:
    rebuild(es_client, alias, docs[:1], 1, index_body)
    bad_position = dict(docs[1], position="not-a-number")
    bad_dims = dict(docs[2], embedding=np.ones(7, dtype=np.float32))
    batch = [bad_position, *docs[3:6], bad_dims, docs[6]]
    with pytest.raises(IndexingError) as info:
        write_chunks(es_client, alias, batch, require_alias=True, chunk_size=2, refresh=True)
    report = info.value.report
    assert report.indexed == 4 and report.failed == 2
    by_id = {f.chunk_id: f for f in report.failures}
    assert set(by_id) == {bad_position["chunk_id"], bad_dims["chunk_id"]}
    assert by_id[bad_position["chunk_id"]].status == 400
    assert "position" in by_id[bad_position["chunk_id"]].reason
    assert "dims" in by_id[bad_dims["chunk_id"]].reason or "dimension" in str(
        by_id[bad_dims["chunk_id"]].reason
    )
    # The message names the causes, not just a count.
    message = str(info.value)
    assert bad_position["chunk_id"] in message and bad_dims["chunk_id"] in message
    assert "document_parsing_exception" in message or "mapper_parsing_exception" in message
    assert _count(es_client, alias) == 1 + 4


# --- versioned aliases: rebuild, rollback, failure -----------------------------------------------
def test_first_rebuild_creates_alias_then_swap_keeps_old_for_rollback(
    es_client: Elasticsearch, alias: str, docs: list[dict], index_body: dict
) -> None:
    assert current_index(es_client, alias) is None
    first = rebuild(es_client, alias, docs[:4], 4, index_body, smoke_query_text="cats")
    assert first.previous_index is None
    assert current_index(es_client, alias) == first.index
    assert _count(es_client, alias) == 4

    second = rebuild(
        es_client, alias, docs, len(docs), index_body, smoke_query_vector=docs[0]["embedding"]
    )
    assert second.previous_index == first.index
    assert alias_indices(es_client, alias) == [second.index]  # exactly one target
    assert second.index > first.index  # names sort by creation time
    assert list_versions(es_client, alias) == [first.index, second.index]
    assert _count(es_client, alias) == len(docs)
    assert _count(es_client, first.index) == 4  # old index intact for rollback

    assert rollback(es_client, alias) == first.index
    assert alias_indices(es_client, alias) == [first.index]
    assert _count(es_client, alias) == 4
    with pytest.raises(RollbackError):
        rollback(es_client, alias)
    # Roll forward again by pointing the alias explicitly.
    point_alias(es_client, alias, second.index)
    assert current_index(es_client, alias) == second.index


def test_rebuild_prunes_all_but_keep_previous_versions(
    es_client: Elasticsearch, alias: str, docs: list[dict], index_body: dict
) -> None:
    built = [rebuild(es_client, alias, docs[:2], 2, index_body, keep=1).index for _ in range(3)]
    assert list_versions(es_client, alias) == built[1:]
    assert current_index(es_client, alias) == built[2]


def test_rebuild_failing_mid_load_leaves_alias_on_old_index_and_no_half_built_index(
    es_client: Elasticsearch, alias: str, docs: list[dict], index_body: dict
) -> None:
    good = rebuild(es_client, alias, docs[:3], 3, index_body)
    with pytest.raises(RuntimeError, match="mid-load"):
        rebuild(es_client, alias, failing_after(docs, 5), len(docs), index_body)
    assert alias_indices(es_client, alias) == [good.index]
    assert list_versions(es_client, alias) == [good.index]
    assert _count(es_client, alias) == 3


def test_rebuild_with_wrong_count_or_bad_docs_never_touches_alias(
    es_client: Elasticsearch, alias: str, docs: list[dict], index_body: dict
) -> None:
    good = rebuild(es_client, alias, docs[:3], 3, index_body)
    with pytest.raises(RebuildError, match="expected 99"):
        rebuild(es_client, alias, docs, 99, index_body)
    poisoned = [*docs[:4], dict(docs[4], position="x")]
    with pytest.raises(IndexingError, match=docs[4]["chunk_id"]):
        rebuild(es_client, alias, poisoned, len(poisoned), index_body)
    assert alias_indices(es_client, alias) == [good.index]
    assert list_versions(es_client, alias) == [good.index]


# --- retrieval modes -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "expected_doc"),
    [
        ("felines that purr", "fs:cats.md"),
        ("lava and magma eruption", "api:volcano"),
        ("filing my income tax return", "sql:tax"),
    ],
)
@pytest.mark.parametrize("mode", [m.value for m in SearchMode])
def test_each_mode_finds_the_obvious_document(
    es_client: Elasticsearch,
    search_alias: str,
    embedder: Embedder,
    mode: str,
    query: str,
    expected_doc: str,
) -> None:
    retriever = HybridRetriever(es_client, search_alias, embedder)
    hits = retriever.search(query, mode=mode, k=3)
    assert hits and hits[0].doc_id == expected_doc
    assert hits[0].text and hits[0].title and hits[0].chunk_id
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    if mode in {"hybrid_rrf", "hybrid_linear"}:
        assert hits[0].bm25_rank is not None or hits[0].knn_rank is not None


def test_knn_finds_paraphrase_bm25_cannot(
    es_client: Elasticsearch, search_alias: str, embedder: Embedder
) -> None:
    retriever = HybridRetriever(es_client, search_alias, embedder)
    assert retriever.search("kitten", mode="knn", k=1)[0].doc_id == "fs:cats.md"
    assert retriever.search("kitten", mode="bm25", k=1) == []


def test_metadata_filters_apply_to_bm25_and_knn(
    es_client: Elasticsearch, search_alias: str, embedder: Embedder
) -> None:
    retriever = HybridRetriever(es_client, search_alias, embedder)
    for mode in ("bm25", "knn", "hybrid_rrf", "hybrid_linear"):
        hits = retriever.search("cats dogs volcano", mode=mode, k=10, filters={"source": "api"})
        assert hits and {h.doc_id for h in hits} <= {"api:volcano", "api:ocean"}, mode
        hits = retriever.search(
            "animals", mode=mode, k=10, filters={"doc_id": ["fs:cats.md", "fs:dogs.md"]}
        )
        assert {h.doc_id for h in hits} <= {"fs:cats.md", "fs:dogs.md"}, mode


def test_server_rrf_falls_back_to_client_rrf_on_basic_license(
    es_client: Elasticsearch, search_alias: str, embedder: Embedder
) -> None:
    retriever = HybridRetriever(es_client, search_alias, embedder)
    license_type = es_client.license.get()["license"]["type"]
    hits = retriever.search("felines that purr", mode="server_rrf", k=3)
    if license_type in {"enterprise", "trial"} and retriever.supports_server_rrf():
        # A cluster with the rrf retriever (ELASTICSEARCH_URL) runs the server-side path.
        assert retriever.last_effective_mode == SearchMode.SERVER_RRF
        assert hits
        return
    assert retriever.supports_server_rrf() is False
    assert retriever.server_rrf_fallback_reason
    assert "rrf" in retriever.server_rrf_fallback_reason
    assert retriever.last_effective_mode == SearchMode.HYBRID_RRF
    assert hits[0].mode == "hybrid_rrf"
    client_side = retriever.search("felines that purr", mode="hybrid_rrf", k=3)
    assert [h.chunk_id for h in hits] == [h.chunk_id for h in client_side]


def test_search_many_matches_single_searches(
    es_client: Elasticsearch, search_alias: str, embedder: Embedder
) -> None:
    retriever = HybridRetriever(es_client, search_alias, embedder)
    queries = ["felines", "bread yeast", "python typing", "piano scales", "moon tides"]
    for mode in ("bm25", "knn", "hybrid_rrf", "hybrid_linear"):
        many = retriever.search_many(queries, mode=mode, k=3, batch_size=2)
        single = [retriever.search(q, mode=mode, k=3) for q in queries]
        assert [[h.chunk_id for h in hs] for hs in many] == [
            [h.chunk_id for h in hs] for hs in single
        ], mode
