"""Document-level scoring of a retrieval run with ``ir-measures`` (trec_eval underneath), as
every retrieval benchmark here reports it: nDCG@10, Recall@100, MRR@10.

Kept apart from the scripts (no Elasticsearch, model or settings import) so that
``tests/unit/test_eval_metrics_trec.py`` runs exactly this code next to the product's own
metrics (``llmops_dagster.evaluate.metrics``) on the same runs and checks they agree: a
benchmark's nDCG@10 and an evaluation's ``ndcg_at_10`` mean the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: Report name → ir-measures measure name (parsed with ``ir_measures.parse_measure``).
MEASURES = {"ndcg@10": "nDCG@10", "recall@100": "R@100", "mrr@10": "RR@10"}
#: Documents a run keeps per query: Recall@100 counts the first 100.
RUN_DEPTH = 100
#: Stands in for "nothing retrieved", so such a query counts as 0 instead of vanishing.
NO_HIT = "__none__"

Run = dict[str, dict[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def doc_level_run(hits_per_query: Mapping[str, Sequence[Any]]) -> Run:
    """Chunk hits (best first, ``doc_id`` = ``<source>:<corpus id>``) → a document run: a
    document keeps its best chunk's rank.

    Scores are rank-derived and strictly decreasing: trec_eval re-sorts by score and breaks
    ties by document id, which would silently reorder fused lists with equal scores.
    """
    run: Run = {}
    for qid, hits in hits_per_query.items():
        docs: dict[str, float] = {}
        for hit in hits:
            corpus_id = hit.doc_id.split(":", 1)[1]
            if corpus_id not in docs:
                docs[corpus_id] = float(100_000 - len(docs))
            if len(docs) == RUN_DEPTH:
                break
        run[qid] = docs
    return run


def _measures() -> dict[str, Any]:
    import ir_measures

    return {name: ir_measures.parse_measure(text) for name, text in MEASURES.items()}


def _complete(run: Run, qrels: Qrels) -> Run:
    # Queries with no hits at all must still count (as 0), not vanish from the average.
    return {qid: run.get(qid) or {NO_HIT: 0.0} for qid in qrels}


def per_query(run: Run, qrels: Qrels) -> dict[str, dict[str, float]]:
    """query id → report name → score (unrounded)."""
    import ir_measures

    measures = _measures()
    names = {measure: name for name, measure in measures.items()}
    scores: dict[str, dict[str, float]] = {qid: {} for qid in qrels}
    qrels_dict = {qid: dict(docs) for qid, docs in qrels.items()}
    for metric in ir_measures.iter_calc(list(measures.values()), qrels_dict, _complete(run, qrels)):
        scores[metric.query_id][names[metric.measure]] = float(metric.value)
    return scores


def aggregate(run: Run, qrels: Qrels) -> dict[str, float]:
    """Report name → mean over the queries of ``qrels`` (unrounded)."""
    import ir_measures

    measures = _measures()
    qrels_dict = {qid: dict(docs) for qid, docs in qrels.items()}
    means = ir_measures.calc_aggregate(list(measures.values()), qrels_dict, _complete(run, qrels))
    return {name: float(means[measure]) for name, measure in measures.items()}


def evaluate(run: Run, qrels: Qrels) -> dict[str, float]:
    """:func:`aggregate`, rounded to 4 decimals as the results files hold it."""
    return {name: round(value, 4) for name, value in aggregate(run, qrels).items()}
