"""Unit tests of the search package that need no cluster: bodies, requests, reports, names."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from elasticsearch import exceptions as es_exceptions

from llmops_dagster.access import AccessError, Principal
from llmops_dagster.search.aliases import version_index_name
from llmops_dagster.search.mapping import (
    CORE_ENGLISH_ANALYZER,
    AnalyzerChoice,
    IndexSpec,
    VectorIndexOptions,
    build_index_body,
    chunk_set_digest,
)
from llmops_dagster.search.retriever import (
    HybridRetriever,
    RetrieverConfig,
    SearchMode,
    build_filter_clauses,
)
from llmops_dagster.search.writer import (
    BulkFailure,
    BulkReport,
    IndexingError,
    bulk_actions,
    to_es_document,
)

pytestmark = pytest.mark.unit


# --- mapping -------------------------------------------------------------------------------------
def test_index_body_defaults() -> None:
    body = build_index_body(IndexSpec(dims=384, model_id="m"), analyzer=AnalyzerChoice("standard"))
    index = body["settings"]["index"]
    assert (index["number_of_shards"], index["number_of_replicas"]) == (1, 0)
    props = body["mappings"]["properties"]
    assert props["embedding"] == {
        "type": "dense_vector",
        "dims": 384,
        "index": True,
        "similarity": "cosine",
        # bbq_hnsw + 3x rescoring: benchmarks/vector_options.py's pick (see VectorIndexOptions).
        "index_options": {
            "type": "bbq_hnsw",
            "m": 16,
            "ef_construction": 100,
            "rescore_vector": {"oversample": 3.0},
        },
    }
    keywords = ("chunk_id", "doc_id", "source", "uri", "section", "content_hash", "model_id")
    for name in (*keywords, "allowed_groups"):
        assert props[name] == {"type": "keyword"}
    assert props["position"] == {"type": "integer"}
    assert props["updated_at"] == {"type": "date"}
    assert props["text"] == {"type": "text", "analyzer": "standard"}
    assert body["mappings"]["dynamic"] == "strict"
    assert body["mappings"]["_meta"]["model_id"] == "m"
    assert body["mappings"]["_meta"]["dims"] == 384


def test_index_body_configurable_vector_shards_bm25_and_core_analyzer() -> None:
    spec = IndexSpec(
        dims=8,
        model_id="m",
        shards=3,
        replicas=1,
        vector_options=VectorIndexOptions(type="flat"),
        analyzer=CORE_ENGLISH_ANALYZER,
        bm25_k1=0.9,
        bm25_b=0.4,
    )
    body = build_index_body(spec, meta={"chunk_set_digest": "abc"})
    index = body["settings"]["index"]
    assert (index["number_of_shards"], index["number_of_replicas"]) == (3, 1)
    assert index["similarity"]["default"] == {"type": "BM25", "k1": 0.9, "b": 0.4}
    assert CORE_ENGLISH_ANALYZER in index["analysis"]["analyzer"]
    assert index["analysis"]["filter"]["llmops_english_stop"]["stopwords"] == "_english_"
    assert body["mappings"]["properties"]["embedding"]["index_options"] == {"type": "flat"}
    assert body["mappings"]["_meta"]["chunk_set_digest"] == "abc"


def test_index_spec_validates() -> None:
    with pytest.raises(ValueError):
        IndexSpec(dims=0, model_id="m")


class _AnalyzeOnly:
    """Fake client whose node knows only some analyzers/filters."""

    def __init__(self, english: bool, stop: bool) -> None:
        self.indices = self
        self.english, self.stop = english, stop

    def analyze(self, **kwargs: Any) -> dict:
        if kwargs.get("analyzer") == "english" and not self.english:
            raise _bad_request()
        if "filter" in kwargs and not self.stop:
            raise _bad_request()
        return {"tokens": []}


def _bad_request() -> es_exceptions.BadRequestError:
    from elastic_transport import ApiResponseMeta, HttpHeaders

    meta = ApiResponseMeta(400, "1.1", HttpHeaders(), 0.0, None)  # type: ignore[arg-type]
    return es_exceptions.BadRequestError("illegal_argument_exception", meta, {})


@pytest.mark.parametrize(
    ("english", "stop", "expected"),
    [(True, True, "english"), (False, True, CORE_ENGLISH_ANALYZER), (False, False, "standard")],
)
def test_analyzer_detection_prefers_best_available(
    english: bool, stop: bool, expected: str
) -> None:
    body = build_index_body(IndexSpec(dims=4, model_id="m"), client=_AnalyzeOnly(english, stop))  # type: ignore[arg-type]
    assert body["mappings"]["properties"]["text"]["analyzer"] == expected
    assert body["mappings"]["_meta"]["analyzer"] == expected


def test_chunk_set_digest_is_order_independent() -> None:
    assert chunk_set_digest(["b", "a", "a"]) == chunk_set_digest(["a", "b"])
    assert chunk_set_digest(["a"]) != chunk_set_digest(["a", "b"])


# --- writer --------------------------------------------------------------------------------------
def test_to_es_document_serialises_vectors_and_dates() -> None:
    doc = to_es_document(
        {
            "chunk_id": "c1",
            "embedding": np.array([0.1, 0.2], dtype=np.float32),
            "updated_at": datetime(2026, 1, 2, tzinfo=UTC),
        }
    )
    assert doc["embedding"] == [pytest.approx(0.1), pytest.approx(0.2)]
    assert all(type(x) is float for x in doc["embedding"])
    assert doc["updated_at"] == "2026-01-02T00:00:00+00:00"
    with pytest.raises(ValueError, match="chunk_id"):
        to_es_document({"text": "no id"})


def test_to_es_document_always_carries_an_audience() -> None:
    # A writer that says nothing means public: every query filters on the field.
    assert to_es_document({"chunk_id": "c1"})["allowed_groups"] == ["public"]
    doc = to_es_document({"chunk_id": "c1", "allowed_groups": ["security", "hr", "hr"]})
    assert doc["allowed_groups"] == ["hr", "security"]
    with pytest.raises(AccessError, match="invalid group name 'hr team'"):
        to_es_document({"chunk_id": "c1", "allowed_groups": ["HR Team"]})


def test_bulk_actions_upserts_first_then_deletes() -> None:
    actions = list(bulk_actions("idx", [{"chunk_id": "a"}, {"chunk_id": "b"}], ["x"]))
    assert [(a["_op_type"], a["_id"]) for a in actions] == [
        ("index", "a"),
        ("index", "b"),
        ("delete", "x"),
    ]


def test_indexing_error_message_names_causes_not_just_a_count() -> None:
    report = BulkReport(index="idx", indexed=3, failed=12)
    report.failures = [
        BulkFailure(
            "id-1", "index", 400, "document_parsing_exception", "failed to parse [position]"
        )
    ]
    message = str(IndexingError(report))
    assert "id-1" in message and "document_parsing_exception" in message
    assert "position" in message and "12 failed" in message and "+11 more" in message


# --- aliases -------------------------------------------------------------------------------------
def test_version_names_sort_by_time_and_carry_digest() -> None:
    early = version_index_name("a", "abcdef0123", datetime(2026, 1, 1, tzinfo=UTC))
    late = version_index_name("a", "00000000ff", datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC))
    assert early == "a-20260101000000000000-abcdef01"
    assert early < late
    with pytest.raises(ValueError):
        version_index_name("a", "NOT-HEX!")


# --- retriever -----------------------------------------------------------------------------------
PUBLIC_ONLY = {"terms": {"allowed_groups": ["public"]}}


def test_filter_clauses_always_end_with_the_access_clause() -> None:
    assert build_filter_clauses({"source": "fs", "doc_id": ["b", "a"]}) == [
        {"term": {"source": "fs"}},
        {"terms": {"doc_id": ["a", "b"]}},
        PUBLIC_ONLY,
    ]
    assert build_filter_clauses(None) == [PUBLIC_ONLY]  # no principal: public documents only
    hr = Principal("ana", frozenset({"hr", "finance"}))
    assert build_filter_clauses(None, hr) == [
        {"terms": {"allowed_groups": ["finance", "hr", "public"]}}
    ]


class _FakeEncoder:
    def encode(self, texts: Any) -> np.ndarray:
        return np.ones((len(texts), 3), dtype=np.float32)


class _RecordingClient:
    """Fake ES: records msearch bodies and answers canned hit lists.

    Candidate searches go to ``searches``, ids-query fetches to ``fetches``; ``hidden`` ids are
    left out of fetch answers (as a chunk deleted or re-audienced in between would be);
    ``meta`` is the index ``_meta`` that ``indices.get_mapping`` answers.
    """

    def __init__(
        self,
        bm25: list[tuple[str, float]],
        knn: list[tuple[str, float]],
        meta: dict | None = None,
    ) -> None:
        self.lists = {"bm25": bm25, "knn": knn}
        self.searches: list[dict] = []
        self.fetches: list[dict] = []
        self.hidden: set[str] = set()
        self.probe_error: Exception | None = None
        self.meta = meta if meta is not None else {"text_stemming": "none"}
        self.indices = self
        self.mapping_reads = 0

    def get_mapping(self, index: str) -> Any:
        from types import SimpleNamespace

        self.mapping_reads += 1
        return SimpleNamespace(body={f"{index}-v1": {"mappings": {"_meta": self.meta}}})

    @staticmethod
    def _source(i: str) -> dict:
        return {"chunk_id": i, "doc_id": f"d-{i}", "text": f"text {i}", "title": f"t {i}"}

    def msearch(self, index: str, searches: list[dict], **_: Any) -> dict:
        responses = []
        for body in searches[1::2]:
            filters = body.get("query", {}).get("bool", {}).get("filter", [])
            ids = next((c["ids"]["values"] for c in filters if "ids" in c), None)
            if ids is not None:
                self.fetches.append(body)
                found = [i for i in reversed(ids) if i not in self.hidden]  # any order
                responses.append({"hits": {"hits": [{"_id": i, "_source": self._source(i)}
                                                    for i in found]}})  # fmt: skip
                continue
            self.searches.append(body)
            hits = self.lists["knn" if "knn" in body else "bm25"]
            with_source = body.get("_source") is not False
            responses.append(
                {
                    "hits": {
                        "hits": [
                            {"_id": i, "_score": s}
                            | ({"_source": self._source(i)} if with_source else {})
                            for i, s in hits[: body["size"]]
                        ]
                    }
                }
            )
        return {"responses": responses}

    def search(self, **_: Any) -> dict:
        if self.probe_error:
            raise self.probe_error
        return {}


def test_hybrid_sends_both_searches_in_one_msearch_with_filters() -> None:
    client = _RecordingClient([("a", 3.0), ("b", 2.0)], [("b", 0.9), ("c", 0.8)])
    retriever = HybridRetriever(client, "alias", _FakeEncoder(), RetrieverConfig(window=50))  # type: ignore[arg-type]
    hits = retriever.search("q", mode="hybrid_rrf", k=2, filters={"source": "fs"})
    assert [h.chunk_id for h in hits] == ["b", "a"]
    assert hits[0].bm25_rank == 2 and hits[0].knn_rank == 1
    bm25_body, knn_body = client.searches
    assert bm25_body["size"] == 50
    assert bm25_body["query"]["bool"]["filter"] == [{"term": {"source": "fs"}}, PUBLIC_ONLY]
    assert knn_body["knn"]["filter"] == [{"term": {"source": "fs"}}, PUBLIC_ONLY]
    assert knn_body["knn"]["k"] == 50 and knn_body["knn"]["num_candidates"] >= 50


@pytest.mark.parametrize("mode", ["bm25", "knn", "hybrid_rrf", "hybrid_linear", "server_rrf"])
def test_every_mode_filters_inside_both_searches(mode: str) -> None:
    """The principal's clause is in the BM25 bool.filter and in knn.filter (the kNN search's
    own pre-filter, not a post_filter), in every mode and in both server_rrf sub-retrievers."""
    client = _RecordingClient([("a", 1.0)], [("a", 1.0)])
    retriever = HybridRetriever(client, "alias", _FakeEncoder())  # type: ignore[arg-type]
    sec = Principal("sam", frozenset({"security"}))
    retriever.search_many(["q1", "q2"], mode=mode, principal=sec)
    clause = [{"terms": {"allowed_groups": ["public", "security"]}}]
    bm25_filters, knn_filters = [], []
    for body in client.searches:
        assert "post_filter" not in body
        if "retriever" in body:
            standard, knn = body["retriever"]["rrf"]["retrievers"]
            bm25_filters.append(standard["standard"]["query"]["bool"]["filter"])
            knn_filters.append(knn["knn"]["filter"])
        elif "knn" in body:
            knn_filters.append(body["knn"]["filter"])
        else:
            bm25_filters.append(body["query"]["bool"]["filter"])
    expected_bm25 = 0 if mode == "knn" else 2
    expected_knn = 0 if mode == "bm25" else 2
    assert bm25_filters == [clause] * expected_bm25
    assert knn_filters == [clause] * expected_knn


def test_linear_mode_uses_weights() -> None:
    client = _RecordingClient([("a", 10.0), ("b", 1.0)], [("b", 0.9), ("a", 0.1)])
    retriever = HybridRetriever(client, "alias", _FakeEncoder())  # type: ignore[arg-type]
    bm25_heavy = retriever.search("q", mode="hybrid_linear", weights=(0.9, 0.1))
    knn_heavy = retriever.search("q", mode="hybrid_linear", weights=(0.1, 0.9))
    assert bm25_heavy[0].chunk_id == "a" and knn_heavy[0].chunk_id == "b"


def test_server_rrf_used_when_supported_and_falls_back_otherwise() -> None:
    client = _RecordingClient([("a", 1.0)], [("a", 1.0)])
    retriever = HybridRetriever(client, "alias", _FakeEncoder())  # type: ignore[arg-type]
    retriever.search("q", mode=SearchMode.SERVER_RRF)
    assert "retriever" in client.searches[-1]
    assert client.searches[-1]["retriever"]["rrf"]["rank_constant"] == 20  # dev-split default
    assert retriever.last_effective_mode is SearchMode.SERVER_RRF

    client = _RecordingClient([("a", 1.0)], [("a", 1.0)])
    client.probe_error = _bad_request()
    retriever = HybridRetriever(client, "alias", _FakeEncoder())  # type: ignore[arg-type]
    hits = retriever.search("q", mode="server_rrf")
    assert retriever.last_effective_mode is SearchMode.HYBRID_RRF
    assert retriever.server_rrf_fallback_reason and hits[0].mode == "hybrid_rrf"
    assert all("retriever" not in body for body in client.searches)


def test_bm25_mode_needs_no_embedder() -> None:
    client = _RecordingClient([("a", 1.0)], [])
    hits = HybridRetriever(client, "alias").search("q", mode="bm25")  # type: ignore[arg-type]
    assert hits[0].bm25_rank == 1
    with pytest.raises(ValueError, match="embedder"):
        HybridRetriever(client, "alias").search("q", mode="knn")  # type: ignore[arg-type]


# --- sync ----------------------------------------------------------------------------------------
def test_sync_key_is_text_hash_plus_audience() -> None:
    from llmops_dagster.search.sync import _live_key, sync_key

    assert sync_key("h", ["security", "hr"]) == sync_key("h", "hr,security") == "h|hr,security"
    assert sync_key("h", None) == sync_key("h", []) == "h|public"
    assert sync_key("h", ["hr"]) != sync_key("h", ["hr", "security"])
    # Read back from the live index: no audience reads as public (what the writer defaults
    # to); a hand-edited, invalid one never equals a wanted key, so the sync re-writes it.
    assert _live_key({"content_hash": "h"}) == "h|public"
    assert _live_key({"content_hash": "h", "allowed_groups": ["Top Secret"]}) == "h|<invalid>"


# --- ids-only hybrid -----------------------------------------------------------------------------
_SOURCE_FIELDS = [
    "chunk_id", "doc_id", "title", "text", "source", "uri", "position", "section", "allowed_groups"
]  # fmt: skip


@pytest.mark.parametrize("mode", ["hybrid_rrf", "hybrid_linear"])
def test_ids_only_hybrid_fetches_candidates_without_source_then_top_k_once(mode: str) -> None:
    client = _RecordingClient([("a", 3.0), ("b", 2.5), ("d", 1.0)], [("b", 0.9), ("c", 0.8)])
    retriever = HybridRetriever(client, "alias", _FakeEncoder(), RetrieverConfig(window=50))  # type: ignore[arg-type]
    hits = retriever.search("q", mode=mode, k=2, filters={"source": "fs"})
    for body in client.searches:
        assert (body["_source"], body["stored_fields"], body["track_total_hits"]) == (
            False,
            [],
            False,
        )
        assert body["size"] == 50
    clauses = [{"term": {"source": "fs"}}, PUBLIC_ONLY]
    # One fetch, the fused top k in fused order, under the SAME access clauses.
    assert client.fetches == [
        {
            "query": {"bool": {"filter": [{"ids": {"values": ["b", "a"]}}, *clauses]}},
            "size": 2,
            "_source": _SOURCE_FIELDS,
            "track_total_hits": False,
        }
    ]
    assert [(h.chunk_id, h.doc_id, h.text, h.title) for h in hits] == [
        ("b", "d-b", "text b", "t b"),
        ("a", "d-a", "text a", "t a"),
    ]
    assert (hits[0].bm25_rank, hits[0].knn_rank, hits[1].bm25_rank, hits[1].knn_rank) == (
        2,
        1,
        1,
        None,
    )
    assert hits[0].metadata == {} and hits[0].mode == mode


def test_ids_only_and_inline_hybrid_return_identical_hits() -> None:
    lists = ([("a", 3.0), ("b", 2.0), ("d", 1.0)], [("b", 0.9), ("c", 0.8), ("a", 0.1)])
    new = HybridRetriever(_RecordingClient(*lists), "alias", _FakeEncoder())  # type: ignore[arg-type]
    old_client = _RecordingClient(*lists)
    old = HybridRetriever(
        old_client, "alias", _FakeEncoder(), RetrieverConfig(ids_only_hybrid=False)
    )  # type: ignore[arg-type]
    for mode in ("hybrid_rrf", "hybrid_linear"):
        assert new.search_many(["q1", "q2"], mode=mode, k=3) == old.search_many(
            ["q1", "q2"], mode=mode, k=3
        )
    assert old_client.fetches == []
    assert all(body["_source"] == _SOURCE_FIELDS for body in old_client.searches)


def test_ids_only_batch_fetches_once_and_drops_chunks_the_fetch_withholds() -> None:
    client = _RecordingClient([("a", 3.0), ("b", 2.0)], [("b", 0.9), ("c", 0.8)])
    client.hidden = {"b"}  # e.g. its audience changed between the two requests
    retriever = HybridRetriever(client, "alias", _FakeEncoder())  # type: ignore[arg-type]
    results = retriever.search_many(["q1", "q2", "q3"], mode="hybrid_rrf", k=3)
    assert len(client.fetches) == 1  # the whole batch (one principal) in one ids query
    assert client.fetches[0]["query"]["bool"]["filter"][0] == {"ids": {"values": ["b", "a", "c"]}}
    assert [[h.chunk_id for h in hits] for hits in results] == [["a", "c"]] * 3


def test_single_modes_keep_one_round_trip_with_source() -> None:
    client = _RecordingClient([("a", 3.0)], [("a", 0.9)])
    retriever = HybridRetriever(client, "alias", _FakeEncoder())  # type: ignore[arg-type]
    for mode in ("bm25", "knn"):
        assert retriever.search("q", mode=mode, k=1)[0].doc_id == "d-a"
    assert client.fetches == []
    assert [body["_source"] for body in client.searches] == [_SOURCE_FIELDS] * 2


# --- stemming route ------------------------------------------------------------------------------
def _bm25_must(client: _RecordingClient) -> dict:
    return client.searches[-1]["query"]["bool"]["must"][0]


def test_bm25_on_a_python_stemmed_index_stems_the_query_into_shadow_fields() -> None:
    client = _RecordingClient([("a", 1.0)], [], meta={"text_stemming": "python"})
    retriever = HybridRetriever(client, "alias")  # type: ignore[arg-type]
    retriever.search("Running studies", mode="bm25")
    assert _bm25_must(client) == {
        "multi_match": {
            "query": "run studi",
            "fields": ["title_stemmed", "text_stemmed"],
            "type": "best_fields",
            "tie_breaker": 0.3,
        }
    }
    retriever.search("again", mode="bm25")
    assert client.mapping_reads == 1  # the route is read once, then cached


def test_the_stemming_route_is_read_again_once_its_ttl_has_passed() -> None:
    """An alias swapped to an index built another way is picked up within ``ttl_s``."""
    from llmops_dagster.search.capabilities import AliasCapabilities

    client = _RecordingClient([], [], meta={"text_stemming": "python"})
    now = [1000.0]
    capabilities = AliasCapabilities(client, "alias", ttl_s=300.0, clock=lambda: now[0])  # type: ignore[arg-type]
    assert capabilities.index_stemming() == "python"
    client.meta = {"text_stemming": "analyzer"}  # the alias now points at another index
    now[0] += 300.0
    assert (capabilities.index_stemming(), client.mapping_reads) == ("python", 1)
    now[0] += 0.5
    assert (capabilities.index_stemming(), client.mapping_reads) == ("analyzer", 2)


@pytest.mark.parametrize("meta", [{"text_stemming": "analyzer"}, {"text_stemming": "none"}, {}])
def test_bm25_on_other_indices_searches_the_plain_fields_with_the_raw_query(meta: dict) -> None:
    client = _RecordingClient([("a", 1.0)], [], meta=meta)
    HybridRetriever(client, "alias").search("Running studies", mode="bm25")  # type: ignore[arg-type]
    match = _bm25_must(client)["multi_match"]
    assert (match["query"], match["fields"]) == ("Running studies", ["title", "text"])


def test_bm25_plain_and_stemmed_fields_together_use_dis_max() -> None:
    client = _RecordingClient([("a", 1.0)], [], meta={"text_stemming": "python"})
    config = RetrieverConfig(bm25_fields=("title", "text", "title_stemmed", "text_stemmed^2"))
    HybridRetriever(client, "alias", config=config).search("mice studies", mode="bm25")  # type: ignore[arg-type]
    plain, stemmed = _bm25_must(client)["dis_max"]["queries"]
    assert _bm25_must(client)["dis_max"]["tie_breaker"] == 0.3
    assert (plain["multi_match"]["query"], plain["multi_match"]["fields"]) == (
        "mice studies",
        ["title", "text"],
    )
    assert (stemmed["multi_match"]["query"], stemmed["multi_match"]["fields"]) == (
        "mice studi",
        ["title_stemmed", "text_stemmed^2"],
    )
    assert client.mapping_reads == 0  # configured fields need no look-up


def test_index_body_python_stemming_adds_shadow_fields_and_records_the_route() -> None:
    body = build_index_body(
        IndexSpec(dims=4, model_id="m"), analyzer=AnalyzerChoice(CORE_ENGLISH_ANALYZER)
    )
    props, meta = body["mappings"]["properties"], body["mappings"]["_meta"]
    for name in ("title_stemmed", "text_stemmed"):
        assert props[name] == {"type": "text", "analyzer": CORE_ENGLISH_ANALYZER}
    assert meta["text_stemming"] == "python"
    assert meta["stemmed_fields"] == ["title_stemmed", "text_stemmed"]
    assert meta["stemmer"] == "snowball-english (PyStemmer 3.1.0)"
    assert meta["schema_version"] == 3


def test_index_body_english_analyzer_stems_itself_no_shadow_fields() -> None:
    body = build_index_body(IndexSpec(dims=4, model_id="m"), client=_AnalyzeOnly(True, True))  # type: ignore[arg-type]
    props, meta = body["mappings"]["properties"], body["mappings"]["_meta"]
    assert "text_stemmed" not in props and "title_stemmed" not in props
    assert (meta["analyzer"], meta["text_stemming"]) == ("english", "analyzer")
    assert "stemmer" not in meta
    none = build_index_body(
        IndexSpec(dims=4, model_id="m", stemming="none"), analyzer=AnalyzerChoice("standard")
    )
    assert none["mappings"]["_meta"]["text_stemming"] == "none"
    assert "text_stemmed" not in none["mappings"]["properties"]


def test_stemming_settings_are_validated_with_their_name() -> None:
    with pytest.raises(ValueError, match="stemming='analyzer' needs a stemming analyzer"):
        build_index_body(
            IndexSpec(dims=4, model_id="m", stemming="analyzer"),
            analyzer=AnalyzerChoice("standard"),
        )
    with pytest.raises(ValueError, match="stemming must be one of"):
        IndexSpec(dims=4, model_id="m", stemming="porter")  # type: ignore[arg-type]


def test_vector_options_rescore_oversample() -> None:
    options = VectorIndexOptions(type="bbq_hnsw", rescore_oversample=3.0).as_mapping()
    assert options == {
        "type": "bbq_hnsw",
        "m": 16,
        "ef_construction": 100,
        "rescore_vector": {"oversample": 3.0},
    }
    assert VectorIndexOptions(type="bbq_flat").as_mapping() == {
        "type": "bbq_flat",
        "rescore_vector": {"oversample": 3.0},
    }
    assert VectorIndexOptions(type="bbq_flat", rescore_oversample=0).as_mapping() == {
        "type": "bbq_flat",
        "rescore_vector": {"oversample": 0},
    }
    assert VectorIndexOptions(type="int8_hnsw").as_mapping() == {
        "type": "int8_hnsw",
        "m": 16,
        "ef_construction": 100,
    }
    with pytest.raises(ValueError, match="rescore_oversample needs a quantized type"):
        VectorIndexOptions(type="hnsw", rescore_oversample=2.0)
    with pytest.raises(ValueError, match=r"must be >= 1\.0"):
        VectorIndexOptions(type="int8_hnsw", rescore_oversample=0.5)


def test_to_es_document_fills_stemmed_shadows_only_when_asked() -> None:
    doc = {"chunk_id": "c1", "title": "Mice Studies", "text": "Infected cells were running"}
    assert "text_stemmed" not in to_es_document(doc)
    stemmed = to_es_document(doc, python_stemming=True)
    assert (stemmed["title_stemmed"], stemmed["text_stemmed"]) == (
        "mice studi",
        "infect cell were run",
    )
    assert (stemmed["title"], stemmed["text"]) == (doc["title"], doc["text"])
    assert "title_stemmed" not in to_es_document({"chunk_id": "c2"}, python_stemming=True)


def test_bbq_below_64_dimensions_falls_back_to_int8_of_the_same_structure() -> None:
    from llmops_dagster.search.mapping import VectorIndexOptions

    default = VectorIndexOptions()
    assert default.for_dims(384) is default
    assert default.for_dims(384).as_mapping() == {
        "type": "bbq_hnsw",
        "m": 16,
        "ef_construction": 100,
        "rescore_vector": {"oversample": 3.0},
    }
    assert default.for_dims(4).as_mapping() == {
        "type": "int8_hnsw",
        "m": 16,
        "ef_construction": 100,
    }
    flat = VectorIndexOptions(type="bbq_flat", rescore_oversample=2.0)
    assert flat.for_dims(63).as_mapping() == {
        "type": "int8_flat",
        "rescore_vector": {"oversample": 2.0},
    }
    assert flat.for_dims(64).type == "bbq_flat"
