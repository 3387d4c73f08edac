"""What the retriever sends: the search modes, its settings and the request bodies they make.

Pure functions of their arguments (no client, no I/O), so every body can be checked without a
cluster. Access control lives in the requests: :func:`build_filter_clauses` always ends with the
principal's ``terms`` clause on ``allowed_groups``, which goes into the BM25 query's
``bool.filter``, the kNN search's own ``filter`` (applied while Elasticsearch walks the graph,
so the k nearest *readable* chunks come back) and the ids fetch of ids-only hybrid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from llmops_dagster.access import AUDIENCE_FIELD, Principal
from llmops_dagster.search.fusion import Normalization
from llmops_dagster.search.stemming import is_stemmed_field, stem_text

FilterValue = str | int | float | bool | Sequence[str | int | float | bool]


class SearchMode(StrEnum):
    BM25 = "bm25"
    KNN = "knn"
    HYBRID_RRF = "hybrid_rrf"
    HYBRID_LINEAR = "hybrid_linear"
    SERVER_RRF = "server_rrf"


#: Modes that need the BM25 / the kNN result list, and those fused here from both.
NEEDS_BM25 = frozenset({SearchMode.BM25, SearchMode.HYBRID_RRF, SearchMode.HYBRID_LINEAR})
NEEDS_KNN = frozenset({SearchMode.KNN, SearchMode.HYBRID_RRF, SearchMode.HYBRID_LINEAR})
FUSED = frozenset({SearchMode.HYBRID_RRF, SearchMode.HYBRID_LINEAR})


@dataclass(frozen=True)
class RetrieverConfig:
    """Retrieval parameters: all of them are config so that evaluation can sweep them."""

    #: ``None``: from the index's ``_meta.text_stemming`` (``title``/``text``, or their
    #: ``*_stemmed`` shadows on a Python-stemmed index). Fields ending in ``_stemmed`` get the
    #: stemmed query; plain and stemmed fields together are combined with ``dis_max``.
    bm25_fields: tuple[str, ...] | None = None
    #: ``best_fields`` with a tie breaker: the best field's score plus a share of the others.
    bm25_type: str = "best_fields"
    bm25_tie_breaker: float | None = 0.3
    num_candidates: int = 200
    # Fusion defaults chosen on a DEV split, never on the SciFact test claims the docs quote:
    # benchmarks/fusion_dev.py (PubMedQA PQA-L dev, 500 questions over 1,000 abstracts; nDCG@10
    # BM25 0.9758, kNN 0.9864 in benchmarks/results/fusion_dev.json). RRF: every constant and
    # window of the sweep scored 0.9872, a tie, so the constant stays 20 (the script reports the
    # first of the tie, 60; tests/unit/test_docs_benchmarks.py checks the default still scores
    # the sweep's best). Linear: minmax (0.5, 0.5) 0.9911 beat every other weight and norm.
    # The dev set is near its ceiling: these are "not worse" choices more than tuned ones.
    rank_constant: int = 20
    #: How deep each list goes into the fusion (Elasticsearch's ``rank_window_size``).
    window: int = 100
    #: (bm25, knn) weights for ``hybrid_linear``.
    linear_weights: tuple[float, float] = (0.5, 0.5)
    normalization: Normalization = "minmax"
    vector_field: str = "embedding"
    #: Hybrid modes fetch both candidate lists as ids + scores, then the fused top ``k`` once.
    #: ``False``: the older single round trip with ``_source`` on every candidate.
    ids_only_hybrid: bool = True
    #: How long the index's stemming route (read from ``_meta``) is trusted: an alias swap to
    #: an index built another way is picked up within this many seconds. One mapping read per
    #: 5 minutes stays far out of the latency tail.
    index_info_ttl_s: float = 300.0
    source_fields: tuple[str, ...] = (
        "chunk_id",
        "doc_id",
        "title",
        "text",
        "source",
        "uri",
        "position",
        "section",
        AUDIENCE_FIELD,
    )


@dataclass(frozen=True)
class SearchParams:
    """One ``search_many`` call's effective parameters (call arguments over the config)."""

    k: int
    num_candidates: int
    window: int
    rank_constant: int
    weights: tuple[float, float]
    normalization: Normalization

    @classmethod
    def resolve(
        cls,
        config: RetrieverConfig,
        *,
        k: int,
        num_candidates: int | None = None,
        window: int | None = None,
        rank_constant: int | None = None,
        weights: tuple[float, float] | None = None,
        normalization: Normalization | None = None,
    ) -> SearchParams:
        return cls(
            k=k,
            num_candidates=num_candidates or config.num_candidates,
            window=window or config.window,
            rank_constant=config.rank_constant if rank_constant is None else rank_constant,
            weights=weights or config.linear_weights,
            normalization=normalization or config.normalization,
        )


def build_filter_clauses(
    filters: Mapping[str, FilterValue] | None, principal: Principal | None = None
) -> list[dict[str, Any]]:
    """``{"source": "fs", "doc_id": [..]}`` → ``[term, terms]`` clauses on keyword fields,
    always followed by the principal's access clause (public only when ``principal`` is None).

    Clauses are ANDed, so a caller's own ``allowed_groups`` filter can narrow, never widen.
    """
    clauses: list[dict[str, Any]] = []
    for name, value in (filters or {}).items():
        if isinstance(value, (list, tuple, set, frozenset)):
            clauses.append({"terms": {name: sorted(value, key=str)}})
        else:
            clauses.append({"term": {name: value}})
    clauses.append((principal or Principal.public()).filter_clause())
    return clauses


def _multi_match(query: str, fields: list[str], config: RetrieverConfig) -> dict[str, Any]:
    multi_match: dict[str, Any] = {"query": query, "fields": fields, "type": config.bm25_type}
    if config.bm25_tie_breaker is not None and config.bm25_type in {"best_fields", "phrase"}:
        multi_match["tie_breaker"] = config.bm25_tie_breaker
    return {"multi_match": multi_match}


def bm25_query(
    query: str,
    fields: Sequence[str],
    clauses: list[dict[str, Any]],
    config: RetrieverConfig,
) -> dict[str, Any]:
    """BM25 over ``fields``; shadow (``*_stemmed``) fields get the stemmed query, as the writer
    stemmed their text with the same function."""
    plain = [name for name in fields if not is_stemmed_field(name)]
    stemmed = [name for name in fields if is_stemmed_field(name)]
    matches = []
    if plain:
        matches.append(_multi_match(query, plain, config))
    if stemmed:
        matches.append(_multi_match(stem_text(query), stemmed, config))
    if len(matches) == 1:
        must = matches[0]
    else:  # best of the two, plus a share of the other (as best_fields does per field)
        must = {"dis_max": {"queries": matches, "tie_breaker": config.bm25_tie_breaker or 0.0}}
    return {"bool": {"must": [must], "filter": clauses}}


def knn_clause(
    vector: list[float],
    clauses: list[dict[str, Any]],
    k: int,
    num_candidates: int,
    *,
    vector_field: str,
) -> dict[str, Any]:
    knn: dict[str, Any] = {
        "field": vector_field,
        "query_vector": vector,
        "k": k,
        # ES requires num_candidates >= k (and caps it at 10000).
        "num_candidates": min(10_000, max(num_candidates, k)),
    }
    if clauses:
        # Inside the kNN search, not a post_filter: the k nearest readable chunks.
        knn["filter"] = clauses
    return knn


def search_bodies(
    mode: SearchMode,
    query: str,
    vector: list[float] | None,
    clauses: list[dict[str, Any]],
    params: SearchParams,
    *,
    bm25_fields: Sequence[str],
    config: RetrieverConfig,
) -> list[dict[str, Any]]:
    """The ``msearch`` bodies of one query: one for BM25, kNN and ``server_rrf``, two (BM25
    first, then kNN) for the modes fused here. Hybrid modes ask ``window`` deep, ids and scores
    only when ``config.ids_only_hybrid``."""
    fused = mode in FUSED
    depth = max(params.window, params.k) if fused else params.k
    # Hits' totals are never read: not counting them lets Lucene skip non-competitive
    # documents (block-max WAND), which matters for long BM25 queries.
    source: dict[str, Any] = {"_source": list(config.source_fields), "track_total_hits": False}
    if fused and config.ids_only_hybrid:
        source = {"_source": False, "stored_fields": [], "track_total_hits": False}

    def knn(size: int) -> dict[str, Any]:
        assert vector is not None, f"{mode} needs a query vector"
        return knn_clause(
            vector, clauses, size, params.num_candidates, vector_field=config.vector_field
        )

    if mode is SearchMode.SERVER_RRF:
        bm25 = bm25_query(query, bm25_fields, clauses, config)
        rrf = {
            "retrievers": [{"standard": {"query": bm25}}, {"knn": knn(depth)}],
            "rank_window_size": max(params.window, params.k),
            "rank_constant": params.rank_constant,
        }
        return [{"retriever": {"rrf": rrf}, "size": params.k, **source}]
    bodies: list[dict[str, Any]] = []
    if mode in NEEDS_BM25:
        query_body = bm25_query(query, bm25_fields, clauses, config)
        bodies.append({"query": query_body, "size": depth, **source})
    if mode in NEEDS_KNN:
        bodies.append({"knn": knn(depth), "size": depth, **source})
    return bodies


def fetch_body(
    ids: Sequence[str], clauses: list[dict[str, Any]], source_fields: Sequence[str]
) -> dict[str, Any]:
    """The second request of ids-only hybrid: these chunks, under the same access clauses as
    the candidate searches (a filter context: no scoring, cacheable)."""
    return {
        "query": {"bool": {"filter": [{"ids": {"values": list(ids)}}, *clauses]}},
        "size": len(ids),
        "_source": list(source_fields),
        "track_total_hits": False,
    }
