"""Retrieval and deterministic answer metrics as DeepEval metrics, and the metric sets.

Why both: the pure functions of :mod:`llmops_dagster.evaluate.scoring` are the definition
(unit- and property-tested, and importable from here too); the
:class:`~deepeval.metrics.BaseMetric` subclasses here wrap them so that one DeepEval
``evaluate()`` runs retrieval, deterministic and judge metrics side by side and reports them the
same way.

Retrieval metrics are *document-level*: the retriever returns chunks, the golden set labels
documents. Chunk hits are mapped to their ``doc_id`` and de-duplicated keeping the first (best)
rank, so three chunks of one relevant document count once — otherwise one long document could
fill the top-k and inflate recall. Depths are therefore in documents: the ranking a case
carries must hold at least ``k`` distinct documents (``rag.answer.answer_many`` fetches until
it does, or the index runs out), and :func:`require_metrics_depth` refuses a ranking depth
shallower than the deepest retrieval metric. The ids travel in the test case's ``metadata``
(:data:`RETRIEVED_KEY`, :data:`RELEVANT_KEY`, optional :data:`GRADES_KEY`).

Every score is in [0, 1]; ``success`` is ``score >= threshold``; ``reason`` says what was
compared. Metric keys (:attr:`BaseMetric.__name__`) are MLflow-safe (``recall_at_5``, no ``@``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from deepeval.metrics import BaseMetric
from deepeval.test_case import LLMTestCase

from llmops_dagster.evaluate.scoring import TextEncoder as TextEncoder
from llmops_dagster.evaluate.scoring import cosine_similarity as cosine_similarity
from llmops_dagster.evaluate.scoring import dedupe_doc_ids as dedupe_doc_ids
from llmops_dagster.evaluate.scoring import embedding_similarity as embedding_similarity
from llmops_dagster.evaluate.scoring import exact_match as exact_match
from llmops_dagster.evaluate.scoring import ndcg_at_k as ndcg_at_k
from llmops_dagster.evaluate.scoring import normalize_answer as normalize_answer
from llmops_dagster.evaluate.scoring import recall_at_k as recall_at_k
from llmops_dagster.evaluate.scoring import reciprocal_rank as reciprocal_rank
from llmops_dagster.evaluate.scoring import rouge_l as rouge_l
from llmops_dagster.evaluate.scoring import token_f1 as token_f1

RETRIEVED_KEY = "retrieved_doc_ids"
RELEVANT_KEY = "relevant_doc_ids"
GRADES_KEY = "relevance_grades"

# --------------------------------------------------------------------------------------------
# DeepEval metrics
# --------------------------------------------------------------------------------------------


class _DeterministicMetric(BaseMetric):
    """Shared plumbing: no LLM, synchronous measure, ``a_measure`` delegates.

    DeepEval copies metrics per test case by re-calling ``__init__`` with the attributes whose
    names match its parameters, so every parameter is stored under its own name.
    """

    key = "deterministic"

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self.include_reason = True
        self.async_mode = True
        self.strict_mode = False
        self.verbose_mode = False
        self.evaluation_model = None
        self.error = None

    def _compute(self, test_case: LLMTestCase) -> tuple[float, str]:
        raise NotImplementedError

    def measure(self, test_case: LLMTestCase, *args: Any, **kwargs: Any) -> float:
        try:
            score, reason = self._compute(test_case)
        except (KeyError, TypeError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.score, self.reason, self.success = 0.0, self.error, False
            raise
        self.score = float(min(1.0, max(0.0, score)))
        self.reason = reason
        self.success = self.score >= self.threshold
        return self.score

    async def a_measure(self, test_case: LLMTestCase, *args: Any, **kwargs: Any) -> float:
        return self.measure(test_case)

    def is_successful(self) -> bool:
        if self.error is not None or self.score is None:
            return False
        return bool(self.score >= self.threshold)

    @property
    def __name__(self) -> str:  # type: ignore[override]
        return self.key


#: The base of judge-free metrics, for metrics defined beside their use (online evaluation).
DeterministicMetric = _DeterministicMetric


def _metadata(test_case: LLMTestCase) -> dict[str, Any]:
    return dict(test_case.metadata or {})


def _retrieval_inputs(test_case: LLMTestCase) -> tuple[list[str], list[str], dict[str, float]]:
    meta = _metadata(test_case)
    if RETRIEVED_KEY not in meta or RELEVANT_KEY not in meta:
        raise KeyError(
            f"retrieval metrics need metadata[{RETRIEVED_KEY!r}] and metadata[{RELEVANT_KEY!r}]"
        )
    grades = {str(k): float(v) for k, v in (meta.get(GRADES_KEY) or {}).items()}
    return [str(d) for d in meta[RETRIEVED_KEY]], [str(d) for d in meta[RELEVANT_KEY]], grades


class RecallAtK(_DeterministicMetric):
    """Recall@k over documents (chunk hits deduplicated by ``doc_id``)."""

    def __init__(self, k: int = 5, threshold: float = 0.5) -> None:
        super().__init__(threshold)
        self.k = k
        self.key = f"recall_at_{k}"

    def _compute(self, test_case: LLMTestCase) -> tuple[float, str]:
        retrieved, relevant, _ = _retrieval_inputs(test_case)
        score = recall_at_k(retrieved, relevant, self.k)
        found = sorted(set(dedupe_doc_ids(retrieved)[: self.k]) & set(relevant))
        return score, f"{len(found)}/{len(set(relevant))} relevant docs in top {self.k}: {found}"


class MRR(_DeterministicMetric):
    """Reciprocal rank of the first relevant document (mean over cases = MRR)."""

    def __init__(self, k: int = 10, threshold: float = 0.5) -> None:
        super().__init__(threshold)
        self.k = k
        self.key = f"mrr_at_{k}"

    def _compute(self, test_case: LLMTestCase) -> tuple[float, str]:
        retrieved, relevant, _ = _retrieval_inputs(test_case)
        score = reciprocal_rank(retrieved, relevant, self.k)
        rank = round(1 / score) if score else None
        return score, f"first relevant doc at rank {rank}" if rank else f"none in top {self.k}"


class NDCGAtK(_DeterministicMetric):
    """nDCG@k over documents; graded when the case carries ``relevance_grades``."""

    def __init__(self, k: int = 10, threshold: float = 0.5) -> None:
        super().__init__(threshold)
        self.k = k
        self.key = f"ndcg_at_{k}"

    def _compute(self, test_case: LLMTestCase) -> tuple[float, str]:
        retrieved, relevant, grades = _retrieval_inputs(test_case)
        score = ndcg_at_k(retrieved, grades or relevant, self.k)
        return score, f"nDCG@{self.k} of {len(dedupe_doc_ids(retrieved))} ranked docs"


def _answer_pair(test_case: LLMTestCase) -> tuple[str, str]:
    if test_case.expected_output is None:
        raise ValueError("answer metrics need expected_output (a reference answer)")
    return test_case.actual_output or "", test_case.expected_output


class TokenF1(_DeterministicMetric):
    """SQuAD token F1 between the answer and the reference answer."""

    def __init__(self, threshold: float = 0.3) -> None:
        super().__init__(threshold)
        self.key = "token_f1"

    def _compute(self, test_case: LLMTestCase) -> tuple[float, str]:
        prediction, reference = _answer_pair(test_case)
        return token_f1(prediction, reference), "token F1 vs reference (SQuAD normalisation)"


class NormalizedExactMatch(_DeterministicMetric):
    """SQuAD exact match (normalised); DeepEval's ``ExactMatchMetric`` compares raw strings."""

    def __init__(self, threshold: float = 1.0) -> None:
        super().__init__(threshold)
        self.key = "exact_match"

    def _compute(self, test_case: LLMTestCase) -> tuple[float, str]:
        prediction, reference = _answer_pair(test_case)
        score = exact_match(prediction, reference)
        return score, "normalised texts equal" if score else "normalised texts differ"


class RougeL(_DeterministicMetric):
    """ROUGE-L F-measure between the answer and the reference answer."""

    def __init__(self, threshold: float = 0.3) -> None:
        super().__init__(threshold)
        self.key = "rouge_l"

    def _compute(self, test_case: LLMTestCase) -> tuple[float, str]:
        prediction, reference = _answer_pair(test_case)
        return rouge_l(prediction, reference), "ROUGE-L F vs reference (rouge-score, stemmed)"


class EmbeddingSimilarity(_DeterministicMetric):
    """Cosine similarity of answer and reference embeddings (the project's embedder).

    ``encoder`` is shared, not copied, across DeepEval's per-case metric copies (the copy
    passes the same object back to ``__init__``); loaded lazily from ``model_id`` if absent.
    """

    def __init__(
        self,
        encoder: TextEncoder | None = None,
        model_id: str | None = None,
        threshold: float = 0.5,
    ) -> None:
        super().__init__(threshold)
        self.encoder = encoder
        self.model_id = model_id
        self.key = "embedding_similarity"

    def _encoder(self) -> TextEncoder:
        if self.encoder is None:
            if not self.model_id:
                raise ValueError("EmbeddingSimilarity needs an encoder or a model_id")
            from llmops_dagster.embed.model import load_embedder

            self.encoder = load_embedder(self.model_id)
        return self.encoder

    def _compute(self, test_case: LLMTestCase) -> tuple[float, str]:
        prediction, reference = _answer_pair(test_case)
        return (
            embedding_similarity(prediction, reference, self._encoder()),
            "cosine of answer and reference embeddings (negatives clipped to 0)",
        )


RETRIEVAL_METRIC_TYPES: tuple[type[BaseMetric], ...] = (RecallAtK, MRR, NDCGAtK)


def retrieval_depths(metrics: Iterable[Any]) -> dict[str, int]:
    """Retrieval metric key → the number of documents it reads (``ndcg_at_10`` → 10)."""
    return {m.key: int(m.k) for m in metrics if isinstance(m, RETRIEVAL_METRIC_TYPES)}


def require_metrics_depth(metrics_depth: int, metrics: Iterable[Any]) -> None:
    """ValueError when a ranking of ``metrics_depth`` documents is too shallow for a metric:
    nDCG@10 over 5 documents is not nDCG@10, and would be reported as if it were."""
    depths = retrieval_depths(metrics)
    if not depths:
        return
    deepest = max(depths.values())
    if metrics_depth < deepest:
        keys = ", ".join(sorted(k for k, depth in depths.items() if depth == deepest))
        raise ValueError(
            f"metrics_depth {metrics_depth} is shallower than the deepest retrieval metric "
            f"({keys}: {deepest} documents): set metrics_depth >= {deepest} (retrieval "
            "settings / the bundle's metrics_depth / EvaluationConfig.metrics_depth)"
        )


def default_metrics(
    *,
    encoder: TextEncoder | None = None,
    recall_k: int = 5,
    ndcg_k: int = 10,
    mrr_k: int = 10,
    include_embedding: bool = True,
) -> list[BaseMetric]:
    """The judge-free metric set the default gate reads: retrieval + deterministic answer."""
    metrics: list[BaseMetric] = [
        RecallAtK(k=recall_k),
        MRR(k=mrr_k),
        NDCGAtK(k=ndcg_k),
        TokenF1(),
        NormalizedExactMatch(),
        RougeL(),
    ]
    if include_embedding:
        metrics.append(EmbeddingSimilarity(encoder=encoder))
    return metrics


def judge_metrics(judge: Any, *, threshold: float = 0.5) -> list[BaseMetric]:
    """DeepEval's judge metrics over ``judge``: answer relevancy, faithfulness, G-Eval
    correctness (against the reference answer). Reasons off: each reason is one more judge
    call, and with a small judge the reason is the least informative part."""
    from deepeval.metrics import AnswerRelevancyMetric, FaithfulnessMetric, GEval
    from deepeval.test_case import SingleTurnParams

    return [
        AnswerRelevancyMetric(
            threshold=threshold, model=judge, include_reason=False, async_mode=True
        ),
        FaithfulnessMetric(threshold=threshold, model=judge, include_reason=False, async_mode=True),
        GEval(
            name="Correctness",
            criteria=(
                "Is the actual output factually correct and complete compared with the expected "
                "output? Penalise contradictions and missing facts; ignore style."
            ),
            evaluation_params=[
                SingleTurnParams.INPUT,
                SingleTurnParams.ACTUAL_OUTPUT,
                SingleTurnParams.EXPECTED_OUTPUT,
            ],
            # Fixed steps: one judge call fewer per case, and the same rubric on every run.
            evaluation_steps=[
                "Compare the facts in the actual output with the expected output.",
                "Lower the score for each contradicted or missing fact.",
            ],
            threshold=threshold,
            model=judge,
            async_mode=True,
        ),
    ]


def metric_key(metric: Any) -> str:
    """Stable, MLflow-safe key for any DeepEval metric (ours or DeepEval's built-ins)."""
    name = getattr(metric, "key", None) if isinstance(metric, _DeterministicMetric) else None
    if name:
        return str(name)
    raw = getattr(metric, "__name__", type(metric).__name__)
    raw = str(raw)
    geval = re.fullmatch(r"(.+?)\s*\[GEval\]", raw)
    if geval:
        raw = f"geval_{geval.group(1)}"
    return re.sub(r"[^0-9a-z]+", "_", raw.lower()).strip("_")
