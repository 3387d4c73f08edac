"""The RAFT context of a drafted item: its oracle chunk among distractors a search returns for
its question, as the training reader (see :mod:`llmops_dagster.train.raft` for the drafting).

Why a separate module: drafting is text work with no search; placing the oracle among
distractors is where the audience filter must hold, and :func:`with_distractors` is the one place
that checks it (a hit the reader may not read fails the run instead of leaking into training).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from llmops_dagster.access import Principal
from llmops_dagster.qa import QAItem
from llmops_dagster.rag.hits import HitLike
from llmops_dagster.train.dataset import ContextPassage
from llmops_dagster.train.raft import DraftedItem, DraftReport, RaftError

#: Questions asked as one principal → each question's hits (the filter is the search's).
SearchFn = Callable[[Sequence[str], Principal], Sequence[Sequence[HitLike]]]


def retriever_search(retriever: Any, *, mode: str, k: int) -> SearchFn:
    """A :data:`SearchFn` over a retriever: ``search_many`` (one embedding batch, ``msearch``
    round trips) where it has one, else one ``search`` per question."""

    def search(questions: Sequence[str], who: Principal) -> list[list[HitLike]]:
        many = getattr(retriever, "search_many", None)
        if many is not None:
            return [list(hits) for hits in many(list(questions), mode, k, principal=who)]
        return [list(retriever.search(q, mode=mode, k=k, principal=who)) for q in questions]

    return search


def with_distractors(
    report: DraftReport,
    search: SearchFn,
    *,
    k: int,
    reader: Principal | None = None,
    seed: int = 13,
) -> DraftReport:
    """Each item's context: its oracle chunk among ``k - 1`` distractors that a search for the
    question returns as ``reader`` (chunks of other documents only: another chunk of the same
    document could hold the answer too), the oracle at a seeded position — the prompt serving
    builds, with the answer's chunk somewhere in it.

    Distractors are chunks drafting saw as readable (``report.readable``); a hit the reader
    may not read (``report.unreadable``) means the search ignored the audience and raises
    :class:`RaftError`; a hit the warehouse does not hold (an index ahead of or behind it) is
    skipped. ``report.short_context`` counts the items left with fewer than ``k`` chunks.
    """
    if k < 1:
        raise RaftError(f"k must be >= 1, not {k}")
    who = reader or Principal.public()
    rng = random.Random(seed)
    results = search([d.item.question for d in report.items], who) if report.items else []
    if len(results) != len(report.items):
        raise RaftError(f"search returned {len(results)} results for {len(report.items)} questions")
    out: list[DraftedItem] = []
    report.short_context = 0
    for drafted, hits in zip(report.items, results, strict=True):
        leaked = [h.chunk_id for h in hits if h.chunk_id in report.unreadable]
        if leaked:
            raise RaftError(
                f"the distractor search as {who.name} ({','.join(who.visible_groups)}) returned "
                f"chunks that audience may not read ({', '.join(leaked[:3])}): the search must "
                "filter by the principal's groups"
            )
        distractors = [
            ContextPassage(h.chunk_id, h.doc_id, h.text, h.title or "", float(h.score))
            for h in hits
            if h.doc_id != drafted.oracle.doc_id and h.chunk_id in report.readable
        ][: k - 1]
        context = list(distractors)
        context.insert(rng.randint(0, len(context)), drafted.oracle)
        report.short_context += len(context) < k
        out.append(
            DraftedItem(
                drafted.item, drafted.oracle, drafted.sentence, drafted.template, tuple(context)
            )
        )
    report.items = out
    return report


def context_fn(
    report: DraftReport, fallback: Callable[[QAItem], Sequence[HitLike]] | None = None
) -> Callable[[QAItem], Sequence[HitLike]]:
    """The drafted contexts by item id, for ``build_sft_dataset(context_fn=...)``; an item not
    drafted here (hand-written or reviewed) gets ``fallback``'s context when given, else none."""
    by_id: Mapping[str, list[ContextPassage]] = {d.item.id: list(d.context) for d in report.items}

    def context(item: QAItem) -> Sequence[HitLike]:
        if item.id in by_id:
            return by_id[item.id]
        return list(fallback(item)) if fallback is not None else []

    return context
