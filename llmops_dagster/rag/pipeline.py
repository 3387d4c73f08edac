"""The RAG pipeline: one object (retriever + prompt + generator + retrieval settings).

Why one object: ``ask``, the evaluation asset and the fine-tuning dataset asset (and the server
that comes next) must retrieve and prompt exactly alike, or an evaluation scores something other
than what users get. They all build this object (``resources.build_rag_pipeline``) instead of
wiring a retriever, a prompt and a generator by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmops_dagster.access import Principal
from llmops_dagster.models.base import Generator
from llmops_dagster.rag.answer import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MODE,
    NO_OBSERVER,
    Answer,
    Gate,
    HitLike,
    Retriever,
    StageObserver,
    answer_many,
)
from llmops_dagster.rag.extractive import ExtractiveAnswerer
from llmops_dagster.rag.prompts import PromptTemplate


@dataclass(frozen=True)
class RetrievalSettings:
    """How the context of an answer is found: search mode, the chunks put in the prompt (k),
    and how deep the ranking kept for retrieval metrics goes (``metrics_depth`` ≥ 10, so
    recall@5 / nDCG@10 / MRR@10 are computed at the depths their names say)."""

    mode: str = DEFAULT_MODE
    k: int = 3
    metrics_depth: int = 10

    def as_params(self) -> dict[str, str]:
        return {
            "retrieval.mode": self.mode,
            "retrieval.k": str(self.k),
            "retrieval.metrics_depth": str(self.metrics_depth),
        }


@dataclass
class RagPipeline:
    """Retrieve → fenced prompt → generate → cited answer, with one set of settings."""

    retriever: Retriever
    generator: Generator | ExtractiveAnswerer
    prompt: PromptTemplate
    retrieval: RetrievalSettings = RetrievalSettings()
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    #: The registered bundle this pipeline serves (``models:/llmops-rag-bundle/3``), if any.
    bundle_uri: str | None = None

    @property
    def model_id(self) -> str:
        return self.generator.model_id

    @property
    def prompt_ref(self) -> str:
        return f"{self.prompt.name}@{self.prompt.version}"

    def answer(
        self,
        question: str,
        *,
        max_new_tokens: int | None = None,
        filters: Mapping[str, Any] | None = None,
        observer: StageObserver = NO_OBSERVER,
        principal: Principal | None = None,
        gate: Gate | None = None,
    ) -> Answer:
        return self.answer_many(
            [question],
            max_new_tokens=max_new_tokens,
            filters=filters,
            observer=observer,
            principal=principal,
            gate=gate,
        )[0]

    def answer_many(
        self,
        questions: Sequence[str],
        *,
        max_new_tokens: int | None = None,
        filters: Mapping[str, Any] | None = None,
        observer: StageObserver = NO_OBSERVER,
        principal: Principal | None = None,
        gate: Gate | None = None,
    ) -> list[Answer]:
        """Answers in the generator's batches (see :func:`rag.answer.answer_many`);
        ``principal`` = who asks (the retriever filters by audience; None = public only)."""
        return answer_many(
            questions,
            retriever=self.retriever,
            generator=self.generator,
            prompt=self.prompt,
            k=self.retrieval.k,
            mode=self.retrieval.mode,
            max_new_tokens=max_new_tokens or self.max_new_tokens,
            depth=self.retrieval.metrics_depth,
            filters=filters,
            observer=observer,
            principal=principal,
            gate=gate,
        )

    def context(self, question: str, principal: Principal | None = None) -> list[HitLike]:
        """The chunks this pipeline would put in the prompt for ``question`` asked by
        ``principal`` (None = public documents only)."""
        extra = {"principal": principal} if principal is not None else {}
        return list(
            self.retriever.search(question, mode=self.retrieval.mode, k=self.retrieval.k, **extra)
        )

    def context_fn(
        self, principal: Principal | None = None
    ) -> Callable[[object], Sequence[HitLike]]:
        """Context for a QA item (``.question``), as serving sees it: for SFT datasets."""
        return lambda item: self.context(item.question, principal)  # type: ignore[attr-defined]

    def describe(self) -> dict[str, str]:
        """What identifies this pipeline in MLflow params/tags."""
        return {
            "model.id": self.model_id,
            "prompt.version": self.prompt_ref,
            **self.retrieval.as_params(),
            "max_new_tokens": str(self.max_new_tokens),
            **({"bundle.uri": self.bundle_uri} if self.bundle_uri else {}),
        }
