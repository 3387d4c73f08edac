"""The serving guardrails around one answer: screening on the way in, relevance and PII on the
way out, and the bounded line for generation.

Why the relevance refusal lives in a gate between retrieval and generation: a small model given
unrelated chunks still writes something fluent, so when nothing the caller may read is close to
the question, the honest answer is a refusal, produced without calling the model at all.
"Relevant" = some retrieved chunk's kNN similarity (Elasticsearch's ``(1 + cosine) / 2``)
reaches ``min_relevance``; in BM25-only mode (no similarities) any hit counts.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from llmops_dagster.guardrails.injection import screen
from llmops_dagster.rag.hits import HitLike

NOT_IN_DOCUMENTS = (
    "I can't answer that from the documents you can see: none of them is about this question."
)
REFUSED_INJECTION = (
    "I can't help with that request: it looks like an attempt to change my instructions."
)


class Busy(RuntimeError):
    """Too many answers waiting for generation; ``retry_after_s`` says when to come back."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class AnswerGuard:
    """One request's guardrail state: the question's screen, flagged chunks, the refusal."""

    question: str
    policy: Literal["flag", "refuse"]
    min_relevance: float
    question_flags: tuple[str, ...] = ()
    chunk_flags: dict[str, list[str]] = field(default_factory=dict)
    refused: str | None = None  # "prompt_injection" | "nothing_relevant"

    def __post_init__(self) -> None:
        self.question_flags = screen(self.question).flags

    def __call__(self, hits: Sequence[HitLike]) -> str | None:
        """The pipeline's gate: sees the prompt chunks, returns a refusal text or None."""
        for hit in hits:
            flags = screen(f"{hit.title or ''}\n{hit.text}").flags
            if flags:
                self.chunk_flags[hit.chunk_id] = list(flags)
        if self.question_flags and self.policy == "refuse":
            self.refused = "prompt_injection"
            return REFUSED_INJECTION
        if not _relevant(hits, self.min_relevance):
            self.refused = "nothing_relevant"
            return NOT_IN_DOCUMENTS
        return None

    def report(self) -> dict[str, object]:
        return {
            "question_flags": list(self.question_flags),
            "chunk_flags": self.chunk_flags,
            "refused": self.refused,
        }


def _relevant(hits: Sequence[HitLike], min_relevance: float) -> bool:
    if not hits:
        return False
    similarities = [s for h in hits if (s := getattr(h, "knn_score", None)) is not None]
    if not similarities:  # BM25-only: a hit is a term match
        return True
    return max(similarities) >= min_relevance


class GenerationLine:
    """At most ``slots`` answers generate at once; at most ``max_waiting`` wait, each at most
    ``timeout_s``. Beyond that a request is refused with :class:`Busy` (HTTP 503 +
    Retry-After) instead of queueing without bound and exhausting memory."""

    def __init__(self, slots: int, max_waiting: int, timeout_s: float) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self.max_waiting = max_waiting
        self.timeout_s = timeout_s
        self.waiting = 0
        self.refused = 0

    def __enter__(self) -> GenerationLine:
        with self._lock:
            if self.waiting >= self.max_waiting:
                self.refused += 1
                raise Busy(f"{self.waiting} answers are already waiting; try again shortly", 2.0)
            self.waiting += 1
        try:
            acquired = self._slots.acquire(timeout=self.timeout_s)
        finally:
            with self._lock:
                self.waiting -= 1
        if not acquired:
            with self._lock:
                self.refused += 1
            raise Busy(f"no generation slot within {self.timeout_s:.0f} s", 5.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self._slots.release()
