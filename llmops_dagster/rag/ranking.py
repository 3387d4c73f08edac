"""The ranking retrieval metrics read, filled to a depth in documents.

Retrieval metrics read a ranking of *documents* (nDCG@10 = 10 documents), while the index holds
chunks: ten chunks may come from four documents. With a ``depth``,
:func:`llmops_dagster.rag.answer.answer_many` keeps fetching deeper (doubling, up to
:data:`MAX_RANKING_CHUNKS` chunks) until the ranking holds ``depth`` distinct documents or the
index runs out. The prompt's chunks always come from the first search, and the deeper searches
only *append* chunks the first one did not return: for kNN-based modes a larger size can change
the approximate search (more candidates, more to rescore) and so the order at the top, and an
answer must not change because metrics wanted a deeper ranking.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmops_dagster.access import Principal
from llmops_dagster.rag.hits import HitLike

if TYPE_CHECKING:
    from llmops_dagster.rag.answer import Retriever

#: The deepest search made to fill a ranking with ``depth`` distinct documents: a bound on the
#: work for an index whose documents have very many chunks each (the ranking is then shorter
#: than ``depth`` and a warning says so).
MAX_RANKING_CHUNKS = 1000

log = logging.getLogger(__name__)


def search_kwargs(filters: Mapping[str, Any] | None, principal: Principal | None) -> dict[str, Any]:
    # Passed only when given, so filter-less retrievers (the Protocol) fit too.
    extra: dict[str, Any] = {"filters": dict(filters)} if filters else {}
    if principal is not None:
        extra["principal"] = principal
    return extra


def _distinct_docs(hits: Sequence[HitLike]) -> int:
    return len({hit.doc_id for hit in hits})


def _extend_ranking(
    first: Sequence[HitLike], deeper: Sequence[HitLike], depth: int
) -> list[HitLike]:
    """``first`` unchanged, then — in ``deeper``'s order — the first chunk of each document
    ``first`` lacks, until the ranking holds ``depth`` distinct documents. (More chunks of a
    document already ranked would change no document-level metric.)"""
    ranking = list(first)
    docs = {hit.doc_id for hit in first}
    for hit in deeper:
        if len(docs) >= depth:
            break
        if hit.doc_id not in docs:
            ranking.append(hit)
            docs.add(hit.doc_id)
    return ranking


def fill_ranking(
    retriever: Retriever,
    question: str,
    first: Sequence[HitLike],
    *,
    mode: str,
    asked: int,
    depth: int,
    filters: Mapping[str, Any] | None = None,
    principal: Principal | None = None,
) -> list[HitLike]:
    """The ranking of ``question`` with at least ``depth`` distinct documents when the index
    has them: ``first`` (the search of ``asked`` chunks whose top k the prompt gets) extended
    from deeper searches of 2x, 4x, … ``asked`` chunks (at most :data:`MAX_RANKING_CHUNKS`).

    Stops as soon as ``depth`` documents are in, or a search returns fewer hits than asked
    (the index — what this principal may read, under these filters — ran out).
    """
    ranking = list(first)
    if _distinct_docs(ranking) >= depth or len(first) < asked:
        return ranking
    extra = search_kwargs(filters, principal)
    size = asked
    while size < MAX_RANKING_CHUNKS:
        size = min(size * 2, MAX_RANKING_CHUNKS)
        deeper = list(retriever.search(question, mode=mode, k=size, **extra))
        ranking = _extend_ranking(first, deeper, depth)
        if _distinct_docs(ranking) >= depth or len(deeper) < size:
            return ranking
    log.warning(
        "ranking for %r holds %d of %d documents after %d chunks (MAX_RANKING_CHUNKS): "
        "retrieval metrics at depth %d see fewer documents",
        question,
        _distinct_docs(ranking),
        depth,
        size,
        depth,
    )
    return ranking
