"""The product's retrieval metrics (``evaluate/metrics.py``) and the benchmarks' (``ir-measures``,
i.e. trec_eval, through ``benchmarks/ir_eval.py``) agree to 1e-9 on the same runs: per query and
on average, with chunk-level ties, several chunks per document, graded qrels with judged
non-relevant documents, relevant documents never retrieved, unjudged documents retrieved, a
query with no hits, rankings deeper than Recall@100 reads and more relevant documents than
nDCG@10's ideal list holds.

Why a test and not one implementation: the benchmarks keep the reference implementation the
published numbers (BEIR, MTEB) are computed with, and the product keeps small pure functions
with no C-extension dependency at serving time; this test is what makes them one definition.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from llmops_dagster.evaluate.metrics import ndcg_at_k, recall_at_k, reciprocal_rank

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ir_eval.py"
PREFIX = "beir:"  # the index's doc ids are <source>:<corpus id>; qrels name corpus ids


@dataclass(frozen=True)
class Hit:
    doc_id: str
    score: float


@pytest.fixture(scope="module")
def ir_eval() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ir_eval_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _hits(docs: list[str], *, chunks_per_doc: int = 1, tie_every: int = 3) -> list[Hit]:
    """Chunk hits in rank order: each document's chunks spread over the ranking (a document
    reappears lower down), scores tied in runs of ``tie_every`` as fusion produces them."""
    order = [d for _ in range(chunks_per_doc) for d in docs]
    return [Hit(f"{PREFIX}{d}", 1.0 - (i // tie_every) / 1000) for i, d in enumerate(order)]


def _runs() -> tuple[dict[str, list[Hit]], dict[str, dict[str, int]]]:
    rng = random.Random(26)
    hits: dict[str, list[Hit]] = {}
    qrels: dict[str, dict[str, int]] = {}
    # Random realistic queries: 60 candidate documents, 1-6 judged (grades 0-2), 0-40 retrieved.
    for q in range(40):
        corpus = [f"d{n}" for n in range(60)]
        judged = rng.sample(corpus, rng.randint(1, 6))
        grades = {d: rng.choice([0, 1, 1, 2]) for d in judged}
        if not any(grades.values()):
            grades[judged[0]] = 1  # golden loaders drop queries with nothing to find
        qrels[f"r{q}"] = grades
        ranked = rng.sample(corpus, rng.randint(0, 40))
        hits[f"r{q}"] = _hits(ranked, chunks_per_doc=rng.randint(1, 3))
    # Hand-made edges.
    qrels["no_hits"] = {"d1": 1}
    hits["no_hits"] = []
    qrels["deep"] = {"d105": 2, "d99": 1, "d3": 1}  # d105 is the 106th document: past R@100
    hits["deep"] = _hits([f"d{n}" for n in range(120)], chunks_per_doc=2)
    qrels["many_relevant"] = {f"d{n}": 1 + n % 2 for n in range(14)}  # ideal DCG cut at 10
    hits["many_relevant"] = _hits([f"d{n}" for n in range(20, -1, -1)], tie_every=30)
    qrels["late_first_hit"] = {"d11": 2, "x": 1}  # first relevant at rank 12: RR@10 = 0
    hits["late_first_hit"] = _hits([f"d{n}" for n in range(20)])
    qrels["unjudged_only"] = {"d50": 1, "d51": 0}
    hits["unjudged_only"] = _hits(["u1", "u2", "d51", "u3"])
    return hits, qrels


def _product(hits: list[Hit], grades: dict[str, int]) -> dict[str, float]:
    ranked = [h.doc_id for h in hits]
    graded = {f"{PREFIX}{d}": g for d, g in grades.items()}
    relevant = [d for d, g in graded.items() if g > 0]
    return {
        "ndcg@10": ndcg_at_k(ranked, graded, 10),
        "recall@100": recall_at_k(ranked, relevant, 100),
        "mrr@10": reciprocal_rank(ranked, relevant, 10),
    }


def test_product_metrics_equal_trec_eval_per_query_and_on_average(ir_eval: ModuleType) -> None:
    hits, qrels = _runs()
    reference = ir_eval.per_query(ir_eval.doc_level_run(hits), qrels)
    ours = {qid: _product(hits[qid], grades) for qid, grades in qrels.items()}
    assert set(reference) == set(ours) == set(qrels)
    for qid in qrels:
        for name in ir_eval.MEASURES:
            assert ours[qid][name] == pytest.approx(reference[qid][name], abs=1e-9), (qid, name)
    means = ir_eval.aggregate(ir_eval.doc_level_run(hits), qrels)
    for name in ir_eval.MEASURES:
        mean = sum(q[name] for q in ours.values()) / len(ours)
        assert mean == pytest.approx(means[name], abs=1e-9), name
    # The edges are really exercised (not all zeros or ones): exact values where knowable.
    assert reference["deep"]["recall@100"] == pytest.approx(2 / 3)
    assert reference["late_first_hit"]["mrr@10"] == 0.0
    assert reference["no_hits"] == {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    assert 0.0 < reference["many_relevant"]["ndcg@10"] < 1.0
    assert 0.1 < means["ndcg@10"] < 0.9 and 0.1 < means["mrr@10"] < 0.9


def test_the_rank_derived_run_is_what_keeps_tied_hits_in_order(ir_eval: ModuleType) -> None:
    """Fed the raw tied scores, trec_eval re-sorts ties by document id and disagrees with the
    ranking the product (and a user) saw; the benchmark's run keeps the order."""
    hits = [Hit(f"{PREFIX}b", 1.0), Hit(f"{PREFIX}a", 1.0)]
    qrels = {"q": {"a": 1}}
    assert reciprocal_rank([h.doc_id for h in hits], [f"{PREFIX}a"], 10) == 0.5
    assert ir_eval.per_query(ir_eval.doc_level_run({"q": hits}), qrels)["q"]["mrr@10"] == 0.5
    raw = {"q": {h.doc_id.removeprefix(PREFIX): h.score for h in hits}}
    assert ir_eval.per_query(raw, qrels)["q"]["mrr@10"] == 1.0
