"""Metric math: the pure functions (examples + properties) and their DeepEval wrappers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from deepeval.metrics.utils.metrics import copy_metrics
from deepeval.test_case import LLMTestCase
from hypothesis import given
from hypothesis import strategies as st

from llmops_dagster.evaluate.metrics import (
    MRR,
    EmbeddingSimilarity,
    NDCGAtK,
    NormalizedExactMatch,
    RecallAtK,
    RougeL,
    TokenF1,
    cosine_similarity,
    dedupe_doc_ids,
    default_metrics,
    embedding_similarity,
    exact_match,
    metric_key,
    ndcg_at_k,
    normalize_answer,
    recall_at_k,
    reciprocal_rank,
    rouge_l,
    token_f1,
)

pytestmark = pytest.mark.unit

doc_ids = st.lists(st.sampled_from([f"fs:d{i}" for i in range(12)]), max_size=15)


def test_dedupe_keeps_first_rank() -> None:
    assert dedupe_doc_ids(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("retrieved", "relevant", "k", "expected"),
    [
        (["a", "b", "c"], ["c"], 3, 1.0),
        (["a", "b", "c"], ["c"], 2, 0.0),
        (["a", "a", "a", "b"], ["b"], 2, 1.0),  # chunk duplicates do not push b out
        (["a", "b"], ["b", "z"], 5, 0.5),
        (["a"], [], 5, 0.0),
    ],
)
def test_recall_examples(
    retrieved: list[str], relevant: list[str], k: int, expected: float
) -> None:
    assert recall_at_k(retrieved, relevant, k) == pytest.approx(expected)


def test_reciprocal_rank_uses_document_ranks() -> None:
    assert reciprocal_rank(["a", "a", "b"], ["b"]) == pytest.approx(0.5)
    assert reciprocal_rank(["a", "b"], ["z"]) == 0.0
    assert reciprocal_rank(["a", "b", "c"], ["c"], k=2) == 0.0


def test_ndcg_known_value_and_grades() -> None:
    # relevant at rank 2 of binary labels: (1/log2(3)) / 1
    assert ndcg_at_k(["x", "r"], ["r"], 10) == pytest.approx(1 / math.log2(3))
    # graded: the higher grade first is the ideal order
    assert ndcg_at_k(["hi", "lo"], {"hi": 2, "lo": 1}, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["lo", "hi"], {"hi": 2, "lo": 1}, 10) < 1.0


@given(relevant=st.sets(st.sampled_from([f"fs:d{i}" for i in range(12)]), min_size=1))
def test_ndcg_of_perfect_ranking_is_one(relevant: set[str]) -> None:
    ranking = [*sorted(relevant), "fs:other"]
    assert ndcg_at_k(ranking, relevant, k=len(relevant)) == pytest.approx(1.0)
    assert recall_at_k(ranking, relevant, k=len(relevant)) == pytest.approx(1.0)
    assert reciprocal_rank(ranking, relevant) == 1.0


@given(
    retrieved=doc_ids,
    relevant=st.sets(st.sampled_from([f"fs:d{i}" for i in range(12)])),
    k=st.integers(1, 20),
)
def test_scores_bounded(retrieved: list[str], relevant: set[str], k: int) -> None:
    for value in (
        recall_at_k(retrieved, relevant, k),
        reciprocal_rank(retrieved, relevant, k),
        ndcg_at_k(retrieved, relevant, k),
    ):
        assert 0.0 <= value <= 1.0


@given(
    retrieved=doc_ids,
    relevant=st.sets(st.sampled_from([f"fs:d{i}" for i in range(12)])),
    data=st.data(),
)
def test_recall_invariant_to_order_within_top_k(
    retrieved: list[str], relevant: set[str], data: st.DataObject
) -> None:
    ranking = dedupe_doc_ids(retrieved)
    k = len(ranking)
    shuffled = data.draw(st.permutations(ranking))
    assert recall_at_k(shuffled, relevant, k) == recall_at_k(ranking, relevant, k)
    # …and to the order of the relevant labels
    assert recall_at_k(ranking, list(reversed(sorted(relevant))), k) == recall_at_k(
        ranking, sorted(relevant), k
    )


@given(
    retrieved=doc_ids,
    relevant=st.sets(st.sampled_from([f"fs:d{i}" for i in range(12)])),
    k=st.integers(1, 10),
)
def test_recall_monotone_in_k(retrieved: list[str], relevant: set[str], k: int) -> None:
    assert recall_at_k(retrieved, relevant, k) <= recall_at_k(retrieved, relevant, k + 1)


def test_squad_normalisation_and_em() -> None:
    assert normalize_answer("The  Director, of course!") == "director of course"
    assert exact_match("The department director.", "department director") == 1.0
    assert exact_match("a director", "the manager") == 0.0


def test_token_f1_examples() -> None:
    assert token_f1("within 30 days", "Within 30 days.") == pytest.approx(1.0)
    # pred: {submit, within, 30, days} vs ref {claims, within, 30, days}: P=R=3/4
    assert token_f1("submit within 30 days", "claims within 30 days") == pytest.approx(0.75)
    assert token_f1("", "") == 1.0
    assert token_f1("x", "") == 0.0


@given(a=st.text(max_size=40), b=st.text(max_size=40))
def test_token_f1_symmetric_and_bounded(a: str, b: str) -> None:
    assert token_f1(a, b) == pytest.approx(token_f1(b, a))
    assert 0.0 <= token_f1(a, b) <= 1.0
    if normalize_answer(a):
        assert token_f1(a, a) == pytest.approx(1.0)


def test_rouge_l_uses_the_library() -> None:
    assert rouge_l(
        "claims are due within 30 days", "claims are due within 30 days"
    ) == pytest.approx(1.0)
    partial = rouge_l("claims due in 30 days", "expense claims are due within 30 days")
    assert 0.0 < partial < 1.0
    assert rouge_l("", "x") == 0.0


def test_cosine_similarity_clips_to_unit_interval() -> None:
    assert cosine_similarity(np.array([1.0, 0]), np.array([1.0, 0])) == pytest.approx(1.0)
    assert cosine_similarity(np.array([1.0, 0]), np.array([-1.0, 0])) == 0.0
    assert cosine_similarity(np.zeros(2), np.array([1.0, 0])) == 0.0


class _FakeEncoder:
    """Bag-of-letters vectors: deterministic, no model."""

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 26), dtype=np.float32)
        for i, text in enumerate(texts):
            for ch in text.lower():
                if "a" <= ch <= "z":
                    out[i, ord(ch) - 97] += 1
        return out


def _case(**overrides: object) -> LLMTestCase:
    base: dict[str, object] = {
        "input": "When are claims due?",
        "actual_output": "Within 30 days.",
        "expected_output": "Claims are due within 30 days.",
        "retrieval_context": ["Claims are due within 30 days."],
        "metadata": {"retrieved_doc_ids": ["fs:a", "fs:a", "fs:b"], "relevant_doc_ids": ["fs:b"]},
    }
    base.update(overrides)
    return LLMTestCase(**base)  # type: ignore[arg-type]


def test_deepeval_metric_wrappers_score_reason_success() -> None:
    case = _case()
    recall = RecallAtK(k=2, threshold=1.0)
    assert recall.measure(case) == 1.0 and recall.success and "fs:b" in recall.reason
    mrr = MRR(threshold=0.6)
    assert mrr.measure(case) == pytest.approx(0.5) and mrr.success is False
    assert NDCGAtK(k=10).measure(case) == pytest.approx(1 / math.log2(3))
    assert TokenF1().measure(case) == pytest.approx(
        token_f1("Within 30 days.", "Claims are due within 30 days.")
    )
    assert NormalizedExactMatch().measure(case) == 0.0
    assert 0 < RougeL().measure(case) < 1
    sim = EmbeddingSimilarity(encoder=_FakeEncoder())
    assert sim.measure(case) == pytest.approx(
        embedding_similarity("Within 30 days.", "Claims are due within 30 days.", _FakeEncoder())
    )


def test_retrieval_metric_without_ids_is_an_error() -> None:
    metric = RecallAtK()
    with pytest.raises(KeyError):
        metric.measure(_case(metadata={}))
    assert metric.error and metric.is_successful() is False


def test_keys_are_mlflow_safe_and_survive_deepeval_copy() -> None:
    metrics = default_metrics(encoder=_FakeEncoder(), recall_k=3, ndcg_k=7)
    keys = [metric_key(m) for m in metrics]
    assert keys == [
        "recall_at_3",
        "mrr_at_10",
        "ndcg_at_7",
        "token_f1",
        "exact_match",
        "rouge_l",
        "embedding_similarity",
    ]
    copies = copy_metrics(metrics)
    assert [metric_key(m) for m in copies] == keys
    assert copies[0].k == 3 and copies[-1].encoder is metrics[-1].encoder


def test_metric_key_for_deepeval_names() -> None:
    class Named:
        def __init__(self, name: str) -> None:
            self.__name__ = name

    assert metric_key(Named("Answer Relevancy")) == "answer_relevancy"
    assert metric_key(Named("Correctness [GEval]")) == "geval_correctness"
