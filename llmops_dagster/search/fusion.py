"""Rank fusion as pure functions: reciprocal rank fusion and weighted linear score fusion.

These run client-side so that hybrid retrieval works on every Elasticsearch license (the
server-side ``rrf``/``linear`` retrievers need an Enterprise license). Keeping them pure makes
the maths testable with property tests, independent of any cluster.

Every function breaks ties deterministically (score, then best rank seen, then id), so the same
inputs always produce the same order — evaluation numbers must not depend on dict ordering.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

Normalization = Literal["minmax", "l2", "none"]

DEFAULT_RANK_CONSTANT = 60
DEFAULT_WINDOW = 100


def rrf_fuse(
    rankings: Sequence[Sequence[str]],
    rank_constant: int = DEFAULT_RANK_CONSTANT,
    window: int = DEFAULT_WINDOW,
    weights: Sequence[float] | None = None,
) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: ``score(d) = Σ_i w_i / (rank_constant + rank_i(d))``.

    Only the first ``window`` entries of each ranking count (ranks are 1-based), which mirrors
    Elasticsearch's ``rank_window_size``. A duplicate id inside one ranking counts once, at its
    best rank. ``weights`` (default all 1) give weighted RRF.

    Returns ``(id, score)`` pairs, best first; ties are broken by the best rank the id reached in
    any ranking, then by id, so that the result does not depend on the order of ``rankings``.
    """
    if rank_constant < 0:
        raise ValueError(f"rank_constant must be >= 0, got {rank_constant}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if weights is not None and len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    scores: dict[str, float] = {}
    best_rank: dict[str, int] = {}
    for list_index, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else float(weights[list_index])
        seen: set[str] = set()
        for rank, doc_id in enumerate(ranking[:window], start=1):
            if doc_id in seen:
                continue
            seen.add(doc_id)
            scores[doc_id] = scores.get(doc_id, 0.0) + weight / (rank_constant + rank)
            best_rank[doc_id] = min(best_rank.get(doc_id, rank), rank)
    ordered = sorted(scores, key=lambda d: (-scores[d], best_rank[d], d))
    return [(doc_id, scores[doc_id]) for doc_id in ordered]


def normalize_scores(
    scores: Mapping[str, float], method: Normalization = "minmax"
) -> dict[str, float]:
    """Bring one result list's scores onto a comparable scale before a weighted sum.

    BM25 scores are unbounded and query-dependent while cosine scores live in [0, 1]; summing
    them raw lets BM25 dominate. ``minmax`` maps to [0, 1] (all-equal scores map to 1.0, so a
    one-hit list still counts fully); ``l2`` divides by the vector norm (in [0, 1] for
    non-negative scores, e.g. BM25 and Elasticsearch's cosine score); ``none`` keeps raw scores.
    """
    if not scores:
        return {}
    if method == "none":
        return dict(scores)
    if method == "minmax":
        low, high = min(scores.values()), max(scores.values())
        span = high - low
        if span <= 0 or not math.isfinite(span):
            return dict.fromkeys(scores, 1.0)
        return {doc_id: (value - low) / span for doc_id, value in scores.items()}
    if method == "l2":
        norm = math.hypot(*scores.values())  # scaled internally: no under/overflow of squares
        if norm <= 0 or not math.isfinite(norm):
            return dict.fromkeys(scores, 0.0)
        return {doc_id: value / norm for doc_id, value in scores.items()}
    raise ValueError(f"unknown normalization {method!r}; use 'minmax', 'l2' or 'none'")


def linear_fuse(
    scored: Sequence[Mapping[str, float]],
    weights: Sequence[float] | None = None,
    normalization: Normalization = "minmax",
) -> list[tuple[str, float]]:
    """Weighted sum of normalised scores: ``score(d) = Σ_i w_i · norm_i(d)`` (missing → 0).

    Ids that appear only in lists with weight 0 are dropped, so weights ``(1, 0)`` reproduce the
    first list's ranking exactly instead of appending the other list's ids with score 0.
    Weights default to equal (1/n). Ties: score, then best position in any weighted list, then id.
    """
    if weights is None:
        weights = [1.0 / len(scored)] * len(scored) if scored else []
    if len(weights) != len(scored):
        raise ValueError(f"{len(weights)} weights for {len(scored)} score lists")
    if any(w < 0 for w in weights):
        raise ValueError(f"weights must be >= 0, got {list(weights)}")
    fused: dict[str, float] = {}
    best_position: dict[str, int] = {}
    for weight, scores in zip(weights, scored, strict=True):
        if weight == 0:
            continue
        normalized = normalize_scores(scores, normalization)
        # Positions come from the raw scores: rounding in the normalisation may tie two scores
        # that were distinct, and the raw order is the one a single-list ranking shows.
        by_score = sorted(scores, key=lambda d: (-scores[d], d))
        for position, doc_id in enumerate(by_score):
            fused[doc_id] = fused.get(doc_id, 0.0) + weight * normalized[doc_id]
            best_position[doc_id] = min(best_position.get(doc_id, position), position)
    ordered = sorted(fused, key=lambda d: (-fused[d], best_position[d], d))
    return [(doc_id, fused[doc_id]) for doc_id in ordered]


def rank_of(ranking: Sequence[str]) -> dict[str, int]:
    """1-based rank of each id in a ranking (first occurrence wins)."""
    ranks: dict[str, int] = {}
    for rank, doc_id in enumerate(ranking, start=1):
        ranks.setdefault(doc_id, rank)
    return ranks
