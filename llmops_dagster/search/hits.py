"""What comes back: the :class:`Hit` type, parsing Elasticsearch hits into it, and turning one
query's responses into its ranked hits (one list as is, or two lists fused here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmops_dagster.search.fusion import linear_fuse, rank_of, rrf_fuse
from llmops_dagster.search.queries import SearchMode, SearchParams


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


def raw_hits(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The hits of one search response (``[]`` when there are none)."""
    # With filter_path, an empty result has no "hits" key at all.
    return list((response.get("hits") or {}).get("hits") or [])


def to_hit(raw: Mapping[str, Any], mode: SearchMode, score: float) -> Hit:
    """One Elasticsearch hit as a :class:`Hit`; ``_source`` fields other than the named ones
    go to ``metadata`` (an ids-only hit has none: empty text and title)."""
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


def with_fields(ranked: Hit, raw: Mapping[str, Any]) -> Hit:
    """``ranked`` (an ids-only hit: rank, scores) filled with the fields of ``raw``."""
    full = to_hit(raw, SearchMode(ranked.mode), ranked.score)
    full.bm25_rank, full.knn_rank = ranked.bm25_rank, ranked.knn_rank
    full.bm25_score, full.knn_score = ranked.bm25_score, ranked.knn_score
    return full


def ranked_hits(
    mode: SearchMode, responses: list[dict[str, Any]], params: SearchParams
) -> list[Hit]:
    """One query's top ``params.k`` hits from its responses: a single list (BM25, kNN,
    ``server_rrf``) with its own ranks, or the BM25 and kNN lists fused by RRF or linear
    combination, each hit keeping its rank and score in both lists."""
    if mode in {SearchMode.BM25, SearchMode.KNN, SearchMode.SERVER_RRF}:
        out = []
        for rank, raw in enumerate(raw_hits(responses[0])[: params.k], start=1):
            hit = to_hit(raw, mode, float(raw.get("_score") or 0.0))
            if mode is SearchMode.BM25:
                hit.bm25_rank, hit.bm25_score = rank, hit.score
            elif mode is SearchMode.KNN:
                hit.knn_rank, hit.knn_score = rank, hit.score
            out.append(hit)
        return out
    bm25_hits, knn_hits = raw_hits(responses[0]), raw_hits(responses[1])
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
        hit = to_hit(by_id[chunk_id], mode, score)
        hit.bm25_rank, hit.knn_rank = bm25_rank.get(chunk_id), knn_rank.get(chunk_id)
        hit.bm25_score, hit.knn_score = bm25_scores.get(chunk_id), knn_scores.get(chunk_id)
        out.append(hit)
    return out
