"""Hybrid retrieval over the chunk alias: BM25, kNN, and their fusion.

Why client-side fusion by default: Elasticsearch's ``rrf``/``linear`` retrievers need an
Enterprise license (and the x-pack rank-rrf module), so peer projects' hybrid search breaks on a
basic license. We send the BM25 and the kNN search in ONE ``msearch`` round trip and fuse here
(:mod:`llmops_dagster.search.fusion`), which works on every cluster. ``server_rrf`` is used only
when a probe shows the cluster accepts the ``rrf`` retriever; otherwise it falls back to
client-side RRF, logs a warning once, and records why (``server_rrf_fallback_reason``).

Access control lives in the requests: every search takes a ``principal`` (``None`` = nobody in
particular, public documents only) whose ``terms`` filter on ``allowed_groups`` goes into every
request body (:func:`~llmops_dagster.search.queries.build_filter_clauses`); nothing is filtered
here after retrieval.

Ids-only hybrid: the two candidate lists (``window`` deep each) come back as ids and scores only
(``_source: false``, ``stored_fields: []``): loading and parsing 2 x 100 abstracts just to keep
10 was most of the hybrid latency. After fusion, the top ``k`` are fetched once with an ``ids``
query that carries the SAME access clauses, so the fetch is enforced by Elasticsearch too: a
chunk whose audience changed between the two requests is not returned (and is dropped here).

Stemming: the BM25 fields follow the index's ``_meta.text_stemming`` (see
:mod:`llmops_dagster.search.mapping`): on a ``python`` index the query is stemmed client-side and
matched against the ``*_stemmed`` shadow fields; otherwise the plain fields are searched (the
node's ``english`` analyzer stems them itself, or nothing stems).

This module orchestrates; the jobs are split out: request bodies and filter clauses
(:mod:`~llmops_dagster.search.queries`), probing the cluster and the alias
(:mod:`~llmops_dagster.search.capabilities`), the :class:`Hit` type, parsing and fusing
responses (:mod:`~llmops_dagster.search.hits`). Their public names are importable from here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from elasticsearch import Elasticsearch

from llmops_dagster.access import Principal
from llmops_dagster.search.capabilities import AliasCapabilities
from llmops_dagster.search.fusion import Normalization
from llmops_dagster.search.hits import Hit, ranked_hits, raw_hits, with_fields
from llmops_dagster.search.mapping import TEXT_FIELDS, TextStemming
from llmops_dagster.search.queries import (
    FUSED,
    FilterValue,
    RetrieverConfig,
    SearchMode,
    SearchParams,
    bm25_query,
    build_filter_clauses,
    fetch_body,
    knn_clause,
    search_bodies,
)
from llmops_dagster.search.stemming import stemmed_field

__all__ = [
    "FilterValue",
    "Hit",
    "HybridRetriever",
    "QueryEncoder",
    "RetrieverConfig",
    "SearchError",
    "SearchMode",
    "build_filter_clauses",
]

#: filter_path: hybrid modes pull 2 x window hits; dropping per-hit boilerplate (_index,
#: _ignored, shard stats) measurably cuts JSON parsing on the client.
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


class HybridRetriever:
    """Searches one alias (or one physical index) in the modes of :class:`SearchMode`.

    ``embedder`` encodes queries with the same model that embedded the chunks (the index
    ``_meta.model_id`` says which; a mismatch silently ruins kNN, so callers should check).

    ``embedder_for`` (model id → encoder) makes the retriever follow the index instead: each
    search resolves the alias to its physical index once, embeds the queries with the model
    that index's ``_meta.model_id`` names (cached per physical index: a physical index never
    changes model), and sends every request of that search to that physical index. So while
    a promotion moves the alias to an index of another model, a search never embeds with one
    model and searches the other's vectors, and never fails. ``encoder_wrapper`` wraps the
    encoder of each search (serving adds its ``embed_query`` trace span this way).
    """

    def __init__(
        self,
        client: Elasticsearch,
        alias: str,
        embedder: QueryEncoder | None = None,
        config: RetrieverConfig | None = None,
        *,
        embedder_for: Callable[[str], QueryEncoder] | None = None,
    ) -> None:
        self.client = client
        self.alias = alias
        self.embedder = embedder
        self.embedder_for = embedder_for
        self.encoder_wrapper: Callable[[QueryEncoder], QueryEncoder] | None = None
        self.config = config or RetrieverConfig()
        self._index_models: dict[str, str] = {}
        self._encoders: dict[str, QueryEncoder] = {}
        self._is_physical = False
        self._models_lock = threading.Lock()
        self.capabilities = AliasCapabilities(client, alias, ttl_s=self.config.index_info_ttl_s)
        #: The mode that actually produced the last results (differs on a server_rrf fallback).
        self.last_effective_mode: SearchMode | None = None

    # --- what the cluster and the alias allow (probed once, cached) ----------------------------
    def supports_server_rrf(self) -> bool:
        """Whether the cluster accepts the ``rrf`` retriever on this alias (probed once)."""
        return self.capabilities.supports_server_rrf()

    @property
    def server_rrf_fallback_reason(self) -> str | None:
        """Why ``server_rrf`` runs as client-side RRF here (None: it does not, or not yet)."""
        return self.capabilities.server_rrf_fallback_reason

    def index_stemming(self) -> TextStemming:
        """The alias's stemming route from its ``_meta`` (cached ``index_info_ttl_s``)."""
        return self.capabilities.index_stemming()

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
        params = SearchParams.resolve(
            self.config,
            k=k,
            num_candidates=num_candidates,
            window=window,
            rank_constant=rank_constant,
            weights=weights,
            normalization=normalization,
        )
        target, encoder = self.alias, self.embedder
        if self.embedder_for is not None:
            target, model_id = self.resolve_index_model()
            if effective is not SearchMode.BM25 and model_id:
                encoder = self._encoder_for(model_id)
        if encoder is not None and self.encoder_wrapper is not None:
            encoder = self.encoder_wrapper(encoder)
        vectors = self._encode(queries, encoder) if effective is not SearchMode.BM25 else None
        clauses = build_filter_clauses(filters, principal)
        fields = self.bm25_fields() if effective is not SearchMode.KNN else ()
        ids_only = effective in FUSED and self.config.ids_only_hybrid
        results: list[list[Hit]] = []
        for start in range(0, len(queries), batch_size):
            batch = range(start, min(start + batch_size, len(queries)))
            searches: list[dict[str, Any]] = []
            for i in batch:
                vector = None if vectors is None else [float(x) for x in vectors[i]]
                bodies = search_bodies(
                    effective,
                    queries[i],
                    vector,
                    clauses,
                    params,
                    bm25_fields=fields,
                    config=self.config,
                )
                for body in bodies:
                    searches.extend(({}, body))
            responses = self._msearch(searches, target)
            per_query = len(responses) // len(batch)
            fused = [
                ranked_hits(effective, responses[j * per_query : (j + 1) * per_query], params)
                for j in range(len(batch))
            ]
            if ids_only:
                fused = self._fetch_hits(fused, clauses, target)
            results.extend(fused)
        return results

    # --- request bodies (see search.queries) ---------------------------------------------------
    def bm25_query(self, query: str, clauses: list[dict[str, Any]]) -> dict[str, Any]:
        """BM25 over :meth:`bm25_fields` (the body's ``query`` part)."""
        return bm25_query(query, self.bm25_fields(), clauses, self.config)

    def knn_clause(
        self, vector: list[float], clauses: list[dict[str, Any]], k: int, num_candidates: int
    ) -> dict[str, Any]:
        """The body's ``knn`` part, access clauses inside the kNN search."""
        return knn_clause(vector, clauses, k, num_candidates, vector_field=self.config.vector_field)

    def fetch_body(self, ids: Sequence[str], clauses: list[dict[str, Any]]) -> dict[str, Any]:
        """The second request of ids-only hybrid (see :func:`search.queries.fetch_body`)."""
        return fetch_body(ids, clauses, self.config.source_fields)

    # --- round trips ---------------------------------------------------------------------------
    def resolve_index_model(self) -> tuple[str, str]:
        """(physical index searched now, the model id its ``_meta`` records, "" if none).

        The alias is resolved on every call (it moves: syncs, rebuilds, promotions); the model
        of a physical index is read once (an index is built for one model and never changes
        it). A name that is no alias is a physical index (an evaluation of a bundle's index)."""
        from llmops_dagster.search.aliases import current_index
        from llmops_dagster.search.mapping import index_meta

        index = None if self._is_physical else current_index(self.client, self.alias)
        if index is None:
            index = self.alias
        with self._models_lock:
            model_id = self._index_models.get(index)
        if model_id is None:
            # "" (an index built by hand, without _meta): the retriever's own embedder.
            model_id = str(index_meta(self.client, index).get("model_id") or "")
            with self._models_lock:
                self._index_models[index] = model_id
                self._is_physical = index == self.alias
        return index, model_id

    def _encoder_for(self, model_id: str) -> QueryEncoder:
        """``embedder_for(model_id)``, asked once per model (it may look through folders)."""
        with self._models_lock:
            found = self._encoders.get(model_id)
        if found is None:
            assert self.embedder_for is not None
            found = self.embedder_for(model_id)
            with self._models_lock:
                self._encoders[model_id] = found
        return found

    def _encode(self, queries: Sequence[str], encoder: QueryEncoder | None = None) -> np.ndarray:
        encoder = encoder if encoder is not None else self.embedder
        if encoder is None:
            raise ValueError("this mode needs query embeddings: pass an embedder")
        return np.asarray(encoder.encode(list(queries)), dtype=np.float32)

    def _fetch_hits(
        self, per_query: list[list[Hit]], clauses: list[dict[str, Any]], target: str | None = None
    ) -> list[list[Hit]]:
        """Fill fused id-only hits with their fields: one ``ids`` search for the whole batch
        (one principal, so one set of clauses). A chunk the fetch does not return (deleted, or
        no longer readable by this principal) is dropped, never shown without its check."""
        wanted = list(dict.fromkeys(hit.chunk_id for hits in per_query for hit in hits))
        if not wanted:
            return per_query
        response = self._msearch([{}, self.fetch_body(wanted, clauses)], target)[0]
        by_id = {raw["_id"]: raw for raw in raw_hits(response)}
        return [
            [with_fields(hit, by_id[hit.chunk_id]) for hit in hits if hit.chunk_id in by_id]
            for hits in per_query
        ]

    def _msearch(
        self, searches: list[dict[str, Any]], target: str | None = None
    ) -> list[dict[str, Any]]:
        response = self.client.msearch(
            index=target or self.alias, searches=searches, filter_path=_FILTER_PATH
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
