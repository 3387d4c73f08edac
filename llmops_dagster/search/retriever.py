"""Hybrid retrieval over the chunk alias: BM25, kNN, and their fusion.

Why client-side fusion by default: Elasticsearch's ``rrf``/``linear`` retrievers need an
Enterprise license (and the x-pack rank-rrf module), so peer projects' hybrid search breaks on a
basic license. We send the BM25 and the kNN search in ONE ``msearch`` round trip and fuse here
(:mod:`llmops_dagster.search.fusion`), which works on every cluster. ``server_rrf`` is used only
when a probe shows the cluster accepts the ``rrf`` retriever; otherwise it falls back to
client-side RRF, logs a warning once, and records why (``server_rrf_fallback_reason``).

Access control lives in the requests: every search takes a ``principal`` (``None`` = nobody in
particular, public documents only) whose ``terms`` filter on ``allowed_groups`` goes into the
BM25 query's ``bool.filter`` AND the kNN search's own ``filter`` (and both sub-retrievers of
``server_rrf``). Elasticsearch applies a kNN ``filter`` while it walks the graph, so the k
nearest *readable* chunks come back; nothing is filtered here after retrieval.

Ids-only hybrid: the two candidate lists (``window`` deep each) come back as ids and scores only
(``_source: false``, ``stored_fields: []``): loading and parsing 2 x 100 abstracts just to keep
10 was most of the hybrid latency. After fusion, the top ``k`` are fetched once with an ``ids``
query that carries the SAME access clauses, so the fetch is enforced by Elasticsearch too: a
chunk whose audience changed between the two requests is not returned (and is dropped here).

Stemming: the BM25 fields follow the index's ``_meta.text_stemming`` (see
:mod:`llmops_dagster.search.mapping`): on a ``python`` index the query is stemmed client-side and
matched against the ``*_stemmed`` shadow fields; otherwise the plain fields are searched (the
node's ``english`` analyzer stems them itself, or nothing stems).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_exceptions

from llmops_dagster.access import AUDIENCE_FIELD, Principal
from llmops_dagster.search.fusion import Normalization, linear_fuse, rank_of, rrf_fuse
from llmops_dagster.search.mapping import TEXT_FIELDS, TextStemming, index_meta, text_stemming_of
from llmops_dagster.search.stemming import is_stemmed_field, stem_text, stemmed_field

log = logging.getLogger(__name__)

FilterValue = str | int | float | bool | Sequence[str | int | float | bool]


class SearchMode(StrEnum):
    BM25 = "bm25"
    KNN = "knn"
    HYBRID_RRF = "hybrid_rrf"
    HYBRID_LINEAR = "hybrid_linear"
    SERVER_RRF = "server_rrf"


#: Modes that need the BM25 / the kNN result list.
_NEEDS_BM25 = {SearchMode.BM25, SearchMode.HYBRID_RRF, SearchMode.HYBRID_LINEAR}
_NEEDS_KNN = {SearchMode.KNN, SearchMode.HYBRID_RRF, SearchMode.HYBRID_LINEAR}
_FUSED = {SearchMode.HYBRID_RRF, SearchMode.HYBRID_LINEAR}


_FILTER_PATH = [
    "responses.hits.hits._id",
    "responses.hits.hits._score",
    "responses.hits.hits._source",
    "responses.error",
    "responses.status",
]


class QueryEncoder(Protocol):
    """What the retriever needs from an embedder (``embed.model.Embedder`` fits)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class SearchError(RuntimeError):
    """Elasticsearch rejected one of the searches; the message carries its reason."""


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
    # Fusion defaults chosen on a DEV split, never on the SciFact test claims the README quotes:
    # benchmarks/fusion_dev.py (PubMedQA PQA-L dev, 500 questions over 1,000 abstracts; nDCG@10
    # BM25 0.9753, kNN 0.9863). RRF: every constant 10..100 at windows 50/100/200 scored
    # 0.9856-0.9857 (k=20 and 10 highest, by 0.0001: the first in sweep order is kept), i.e.
    # 0.0006 under kNN alone there. Linear: minmax (0.5, 0.5) 0.9911 beat every other weight
    # (0.9839-0.9906) and l2 (<= 0.9888). Window 100: 50 and 200 tied with it. The dev set is
    # near its ceiling, so these are "not worse" choices more than tuned ones; the rows are in
    # benchmarks/results/fusion_dev.json.
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


@dataclass
class Hit:
    """One retrieved chunk. ``score`` is the mode's score (fused for hybrid modes)."""

    chunk_id: str
    doc_id: str
    text: str
    title: str
    score: float
    mode: str
    bm25_rank: int | None = None
    knn_rank: int | None = None
    bm25_score: float | None = None
    knn_score: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Params:
    k: int
    num_candidates: int
    window: int
    rank_constant: int
    weights: tuple[float, float]
    normalization: Normalization


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


class HybridRetriever:
    """Searches one alias in the modes of :class:`SearchMode`.

    ``embedder`` encodes queries with the same model that embedded the chunks (the index
    ``_meta.model_id`` says which; a mismatch silently ruins kNN, so callers should check).
    """

    def __init__(
        self,
        client: Elasticsearch,
        alias: str,
        embedder: QueryEncoder | None = None,
        config: RetrieverConfig | None = None,
    ) -> None:
        self.client = client
        self.alias = alias
        self.embedder = embedder
        self.config = config or RetrieverConfig()
        self._server_rrf: bool | None = None
        self.server_rrf_fallback_reason: str | None = None
        #: The mode that actually produced the last results (differs on a server_rrf fallback).
        self.last_effective_mode: SearchMode | None = None
        self._stemming: TextStemming | None = None
        self._stemming_read_at = 0.0

    # --- capability detection ------------------------------------------------------------------
    def supports_server_rrf(self) -> bool:
        """Probe once whether the cluster accepts the ``rrf`` retriever on this alias.

        A size-0 search with two ``match_none`` sub-retrievers costs next to nothing. A missing
        rank-rrf module answers 400 "unknown retriever [rrf]"; a basic license answers 403
        (non-compliant license). Either way the answer is cached for this retriever.
        """
        if self._server_rrf is None:
            probe = {
                "rrf": {
                    "retrievers": [
                        {"standard": {"query": {"match_none": {}}}},
                        {"standard": {"query": {"match_none": {}}}},
                    ]
                }
            }
            try:
                self.client.search(index=self.alias, retriever=probe, size=0)
            except (es_exceptions.BadRequestError, es_exceptions.AuthorizationException) as exc:
                self._server_rrf = False
                self.server_rrf_fallback_reason = (
                    f"cluster rejected the rrf retriever ({exc.meta.status} {exc.message}: "
                    f"{_root_reason(exc.body)}); server-side RRF needs the rank-rrf module "
                    "and an Enterprise license"
                )
                log.warning(
                    "server_rrf unavailable, using client-side RRF instead: %s",
                    self.server_rrf_fallback_reason,
                )
            else:
                self._server_rrf = True
        return self._server_rrf

    def index_stemming(self) -> TextStemming:
        """The alias's stemming route from its ``_meta`` (cached ``index_info_ttl_s``).

        A missing alias reads as ``none``: the search itself then fails with its own
        ``index_not_found`` reason, which names the alias. A credential without the
        ``view_index_metadata`` privilege reads as ``none`` too (plain fields: BM25 still works,
        unstemmed), with a warning naming the privilege or ``bm25_fields`` to set instead.
        """
        now = time.monotonic()
        if self._stemming is None or now - self._stemming_read_at > self.config.index_info_ttl_s:
            try:
                self._stemming = text_stemming_of(index_meta(self.client, self.alias))
            except es_exceptions.NotFoundError:
                self._stemming = "none"
            except es_exceptions.AuthorizationException as exc:
                if self._stemming is None:
                    log.warning(
                        "cannot read the mapping of %s (%s): searching the plain text fields; "
                        "grant view_index_metadata on it or set RetrieverConfig.bm25_fields",
                        self.alias,
                        exc.message,
                    )
                self._stemming = "none"
            self._stemming_read_at = now
        return self._stemming

    def bm25_fields(self) -> tuple[str, ...]:
        """The fields BM25 searches: configured, or what the index's stemming route implies."""
        if self.config.bm25_fields is not None:
            return self.config.bm25_fields
        if self.index_stemming() == "python":
            return tuple(stemmed_field(name) for name in TEXT_FIELDS)
        return TEXT_FIELDS

    def effective_mode(self, mode: SearchMode | str) -> SearchMode:
        """The mode that will really run: ``server_rrf`` degrades to ``hybrid_rrf`` if needed."""
        mode = SearchMode(mode)
        if mode is SearchMode.SERVER_RRF and not self.supports_server_rrf():
            return SearchMode.HYBRID_RRF
        return mode

    # --- public API ----------------------------------------------------------------------------
    def search(
        self,
        query: str,
        mode: SearchMode | str = SearchMode.HYBRID_RRF,
        k: int = 10,
        filters: Mapping[str, FilterValue] | None = None,
        *,
        principal: Principal | None = None,
        num_candidates: int | None = None,
        window: int | None = None,
        rank_constant: int | None = None,
        weights: tuple[float, float] | None = None,
        normalization: Normalization | None = None,
    ) -> list[Hit]:
        """Top ``k`` chunks for ``query`` that ``principal`` may read (None: public only);
        BM25 and kNN share one ``msearch`` round trip."""
        return self.search_many(
            [query],
            mode,
            k,
            filters,
            principal=principal,
            num_candidates=num_candidates,
            window=window,
            rank_constant=rank_constant,
            weights=weights,
            normalization=normalization,
        )[0]

    def search_many(
        self,
        queries: Sequence[str],
        mode: SearchMode | str = SearchMode.HYBRID_RRF,
        k: int = 10,
        filters: Mapping[str, FilterValue] | None = None,
        *,
        principal: Principal | None = None,
        batch_size: int = 32,
        num_candidates: int | None = None,
        window: int | None = None,
        rank_constant: int | None = None,
        weights: tuple[float, float] | None = None,
        normalization: Normalization | None = None,
    ) -> list[list[Hit]]:
        """Many queries (one principal): embeddings in one batch, searches in ``msearch``
        batches."""
        effective = self.effective_mode(mode)
        self.last_effective_mode = effective
        cfg = self.config
        params = _Params(
            k=k,
            num_candidates=num_candidates or cfg.num_candidates,
            window=window or cfg.window,
            rank_constant=cfg.rank_constant if rank_constant is None else rank_constant,
            weights=weights or cfg.linear_weights,
            normalization=normalization or cfg.normalization,
        )
        vectors = self._encode(queries) if effective is not SearchMode.BM25 else None
        clauses = build_filter_clauses(filters, principal)
        ids_only = effective in _FUSED and cfg.ids_only_hybrid
        results: list[list[Hit]] = []
        for start in range(0, len(queries), batch_size):
            batch = range(start, min(start + batch_size, len(queries)))
            searches: list[dict[str, Any]] = []
            for i in batch:
                vector = None if vectors is None else [float(x) for x in vectors[i]]
                for body in self._bodies(effective, queries[i], vector, clauses, params):
                    searches.extend(({}, body))
            responses = self._msearch(searches)
            per_query = len(responses) // len(batch)
            fused = [
                self._combine(effective, responses[j * per_query : (j + 1) * per_query], params)
                for j in range(len(batch))
            ]
            if ids_only:
                fused = self._fetch_hits(fused, clauses)
            results.extend(fused)
        return results

    def fetch_body(self, ids: Sequence[str], clauses: list[dict[str, Any]]) -> dict[str, Any]:
        """The second request of ids-only hybrid: these chunks, under the same access clauses
        as the candidate searches (a filter context: no scoring, cacheable)."""
        return {
            "query": {"bool": {"filter": [{"ids": {"values": list(ids)}}, *clauses]}},
            "size": len(ids),
            "_source": list(self.config.source_fields),
            "track_total_hits": False,
        }

    def _fetch_hits(
        self, per_query: list[list[Hit]], clauses: list[dict[str, Any]]
    ) -> list[list[Hit]]:
        """Fill fused id-only hits with their fields: one ``ids`` search for the whole batch
        (one principal, so one set of clauses). A chunk the fetch does not return (deleted, or
        no longer readable by this principal) is dropped, never shown without its check."""
        wanted = list(dict.fromkeys(hit.chunk_id for hits in per_query for hit in hits))
        if not wanted:
            return per_query
        response = self._msearch([{}, self.fetch_body(wanted, clauses)])[0]
        by_id = {raw["_id"]: raw for raw in _hits(response)}
        out: list[list[Hit]] = []
        for hits in per_query:
            filled = []
            for hit in hits:
                raw = by_id.get(hit.chunk_id)
                if raw is None:
                    continue
                full = _to_hit(raw, SearchMode(hit.mode), hit.score)
                full.bm25_rank, full.knn_rank = hit.bm25_rank, hit.knn_rank
                full.bm25_score, full.knn_score = hit.bm25_score, hit.knn_score
                filled.append(full)
            out.append(filled)
        return out

    # --- request building ----------------------------------------------------------------------
    def _encode(self, queries: Sequence[str]) -> np.ndarray:
        if self.embedder is None:
            raise ValueError("this mode needs query embeddings: pass an embedder")
        return np.asarray(self.embedder.encode(list(queries)), dtype=np.float32)

    def _multi_match(self, query: str, fields: list[str]) -> dict[str, Any]:
        cfg = self.config
        multi_match: dict[str, Any] = {"query": query, "fields": fields, "type": cfg.bm25_type}
        if cfg.bm25_tie_breaker is not None and cfg.bm25_type in {"best_fields", "phrase"}:
            multi_match["tie_breaker"] = cfg.bm25_tie_breaker
        return {"multi_match": multi_match}

    def bm25_query(self, query: str, clauses: list[dict[str, Any]]) -> dict[str, Any]:
        """BM25 over :meth:`bm25_fields`; shadow (``*_stemmed``) fields get the stemmed query,
        as the writer stemmed their text with the same function."""
        fields = self.bm25_fields()
        plain = [name for name in fields if not is_stemmed_field(name)]
        stemmed = [name for name in fields if is_stemmed_field(name)]
        matches = []
        if plain:
            matches.append(self._multi_match(query, plain))
        if stemmed:
            matches.append(self._multi_match(stem_text(query), stemmed))
        if len(matches) == 1:
            must = matches[0]
        else:  # best of the two, plus a share of the other (as best_fields does per field)
            must = {
                "dis_max": {"queries": matches, "tie_breaker": self.config.bm25_tie_breaker or 0.0}
            }
        return {"bool": {"must": [must], "filter": clauses}}

    def knn_clause(
        self, vector: list[float], clauses: list[dict[str, Any]], k: int, num_candidates: int
    ) -> dict[str, Any]:
        knn: dict[str, Any] = {
            "field": self.config.vector_field,
            "query_vector": vector,
            "k": k,
            # ES requires num_candidates >= k (and caps it at 10000).
            "num_candidates": min(10_000, max(num_candidates, k)),
        }
        if clauses:
            # Inside the kNN search, not a post_filter: the k nearest readable chunks.
            knn["filter"] = clauses
        return knn

    def _bodies(
        self,
        mode: SearchMode,
        query: str,
        vector: list[float] | None,
        clauses: list[dict[str, Any]],
        params: _Params,
    ) -> list[dict[str, Any]]:
        fused = mode in _FUSED
        depth = max(params.window, params.k) if fused else params.k
        # Hits' totals are never read: not counting them lets Lucene skip non-competitive
        # documents (block-max WAND), which matters for long BM25 queries.
        source: dict[str, Any] = {
            "_source": list(self.config.source_fields),
            "track_total_hits": False,
        }
        if fused and self.config.ids_only_hybrid:
            source = {"_source": False, "stored_fields": [], "track_total_hits": False}
        bodies: list[dict[str, Any]] = []
        if mode is SearchMode.SERVER_RRF:
            assert vector is not None
            bodies.append(
                {
                    "retriever": {
                        "rrf": {
                            "retrievers": [
                                {"standard": {"query": self.bm25_query(query, clauses)}},
                                {
                                    "knn": self.knn_clause(
                                        vector, clauses, depth, params.num_candidates
                                    )
                                },
                            ],
                            "rank_window_size": max(params.window, params.k),
                            "rank_constant": params.rank_constant,
                        }
                    },
                    "size": params.k,
                    **source,
                }
            )
            return bodies
        if mode in _NEEDS_BM25:
            bodies.append({"query": self.bm25_query(query, clauses), "size": depth, **source})
        if mode in _NEEDS_KNN:
            assert vector is not None
            bodies.append(
                {
                    "knn": self.knn_clause(vector, clauses, depth, params.num_candidates),
                    "size": depth,
                    **source,
                }
            )
        return bodies

    def _msearch(self, searches: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # filter_path: hybrid modes pull 2 x window hits; dropping per-hit boilerplate
        # (_index, _ignored, shard stats) measurably cuts JSON parsing on the client.
        response = self.client.msearch(
            index=self.alias, searches=searches, filter_path=_FILTER_PATH
        )
        items: list[dict[str, Any]] = list(response["responses"])
        for item in items:
            if "error" in item:
                error = item["error"]
                root = (error.get("root_cause") or [error])[0]
                raise SearchError(
                    f"search on {self.alias!r} failed ({item.get('status')}): "
                    f"{root.get('type')}: {root.get('reason')}"
                )
        return items

    # --- response handling ---------------------------------------------------------------------
    def _combine(
        self, mode: SearchMode, responses: list[dict[str, Any]], params: _Params
    ) -> list[Hit]:
        if mode in {SearchMode.BM25, SearchMode.KNN, SearchMode.SERVER_RRF}:
            hits = _hits(responses[0])
            out = []
            for rank, raw in enumerate(hits[: params.k], start=1):
                hit = _to_hit(raw, mode, float(raw.get("_score") or 0.0))
                if mode is SearchMode.BM25:
                    hit.bm25_rank, hit.bm25_score = rank, hit.score
                elif mode is SearchMode.KNN:
                    hit.knn_rank, hit.knn_score = rank, hit.score
                out.append(hit)
            return out
        bm25_hits, knn_hits = _hits(responses[0]), _hits(responses[1])
        by_id: dict[str, dict[str, Any]] = {}
        for raw in [*knn_hits, *bm25_hits]:
            by_id[raw["_id"]] = raw
        bm25_ids = [raw["_id"] for raw in bm25_hits]
        knn_ids = [raw["_id"] for raw in knn_hits]
        bm25_scores = {raw["_id"]: float(raw["_score"]) for raw in bm25_hits}
        knn_scores = {raw["_id"]: float(raw["_score"]) for raw in knn_hits}
        if mode is SearchMode.HYBRID_RRF:
            fused = rrf_fuse(
                [bm25_ids, knn_ids], rank_constant=params.rank_constant, window=params.window
            )
        else:
            fused = linear_fuse(
                [bm25_scores, knn_scores],
                weights=list(params.weights),
                normalization=params.normalization,
            )
        bm25_rank, knn_rank = rank_of(bm25_ids), rank_of(knn_ids)
        out = []
        for chunk_id, score in fused[: params.k]:
            hit = _to_hit(by_id[chunk_id], mode, score)
            hit.bm25_rank, hit.knn_rank = bm25_rank.get(chunk_id), knn_rank.get(chunk_id)
            hit.bm25_score, hit.knn_score = bm25_scores.get(chunk_id), knn_scores.get(chunk_id)
            out.append(hit)
        return out


def _root_reason(body: Any) -> str:
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            root = (error.get("root_cause") or [error])[0]
            return str(root.get("reason", ""))
    return str(body)[:200]


def _hits(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    # With filter_path, an empty result has no "hits" key at all.
    return list((response.get("hits") or {}).get("hits") or [])


def _to_hit(raw: Mapping[str, Any], mode: SearchMode, score: float) -> Hit:
    source = dict(raw.get("_source") or {})
    return Hit(
        chunk_id=str(source.pop("chunk_id", raw["_id"])),
        doc_id=str(source.pop("doc_id", "")),
        text=str(source.pop("text", "")),
        title=str(source.pop("title", "")),
        score=score,
        mode=mode.value,
        metadata=source,
    )
