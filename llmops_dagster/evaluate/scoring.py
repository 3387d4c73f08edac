"""The metrics' definitions: retrieval and deterministic answer scores as pure functions.

Unit- and property-tested here, wrapped as DeepEval metrics in :mod:`.metrics` (which also
exports these names). Free of DeepEval, so a benchmark or a report can score without it.

Retrieval scores are *document-level*: the retriever returns chunks, the golden set labels
documents, so a ranking is deduplicated by document keeping the first (best) rank
(:func:`dedupe_doc_ids`) — otherwise one long document could fill the top-k and inflate
recall. Every score is in [0, 1].
"""

from __future__ import annotations

import math
import re
import string
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Protocol

import numpy as np


def dedupe_doc_ids(doc_ids: Iterable[str]) -> list[str]:
    """Doc ids in first-seen (rank) order, each once: chunk hits → a document ranking."""
    return list(dict.fromkeys(doc_ids))


def recall_at_k(retrieved: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """Share of the relevant documents found in the top ``k`` (documents, deduplicated).

    No relevant documents → 0.0: a query with nothing to find says nothing about the
    retriever, and must not raise a gate's mean (golden loaders drop such queries).
    """
    relevant_set = set(relevant)
    if not relevant_set or k <= 0:
        return 0.0
    top = set(dedupe_doc_ids(retrieved)[:k])
    return len(top & relevant_set) / len(relevant_set)


def reciprocal_rank(
    retrieved: Sequence[str], relevant: Iterable[str], k: int | None = None
) -> float:
    """1 / rank of the first relevant document (within ``k``), 0.0 if none is found."""
    relevant_set = set(relevant)
    ranking = dedupe_doc_ids(retrieved)
    if k is not None:
        ranking = ranking[:k]
    for rank, doc_id in enumerate(ranking, start=1):
        if doc_id in relevant_set:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(
    retrieved: Sequence[str], relevant: Iterable[str] | Mapping[str, float], k: int
) -> float:
    """Normalised DCG at ``k`` with linear gains (as trec_eval / BEIR compute it).

    ``relevant`` is a set of ids (binary relevance) or a mapping id → grade (graded qrels).
    """
    grades = (
        {d: float(g) for d, g in relevant.items() if g > 0}
        if isinstance(relevant, Mapping)
        else dict.fromkeys(relevant, 1.0)
    )
    if not grades or k <= 0:
        return 0.0
    ranking = dedupe_doc_ids(retrieved)[:k]
    dcg = sum(grades.get(d, 0.0) / math.log2(i + 2) for i, d in enumerate(ranking))
    ideal = sorted(grades.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return min(1.0, dcg / idcg) if idcg > 0 else 0.0


_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT_TABLE = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCT_TABLE)
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised texts are equal (SQuAD EM), else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 over normalised tokens (bag of words, with multiplicity)."""
    pred = normalize_answer(prediction).split()
    ref = normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


_ROUGE_LOCK = threading.Lock()


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence, Porter-stemmed), via ``rouge-score``."""
    if not prediction.strip() or not reference.strip():
        return float(prediction.strip() == reference.strip())
    with _ROUGE_LOCK:  # the scorer's stemmer cache is not documented as thread-safe
        return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two vectors mapped to [0, 1] by clipping negatives to 0.

    Clipping rather than (1 + cos) / 2: sentence embeddings of unrelated texts sit near 0,
    and an answer that says nothing related should score near 0, not 0.5.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0.0:
        return 0.0
    return float(min(1.0, max(0.0, float(a @ b) / norm)))


class TextEncoder(Protocol):
    """What the embedding metric needs (``embed.model.Embedder`` fits)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def embedding_similarity(prediction: str, reference: str, encoder: TextEncoder) -> float:
    """Cosine similarity of the two texts' embeddings, in [0, 1]."""
    if not prediction.strip() or not reference.strip():
        return float(prediction.strip() == reference.strip())
    vectors = encoder.encode([prediction, reference])
    return cosine_similarity(vectors[0], vectors[1])
