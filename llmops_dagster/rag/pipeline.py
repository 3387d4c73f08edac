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
    NO_OBSERVER,
    Answer,
    Gate,
    HitLike,
    Retriever,
    StageObserver,
    answer_many,
)
from llmops_dagster.rag.defaults import DEFAULT_K, DEFAULT_MAX_NEW_TOKENS, DEFAULT_MODE
from llmops_dagster.rag.extractive import ExtractiveAnswerer
from llmops_dagster.rag.prompts import PromptTemplate


@dataclass(frozen=True)
class RetrievalSettings:
    """How the context of an answer is found: search mode, the chunks put in the prompt (k),
    and how deep the ranking kept for retrieval metrics goes, in *documents*
    (``metrics_depth``: at least the deepest retrieval metric — 10 for nDCG@10/MRR@10 — which
    the evaluation checks against the metrics it runs, ``evaluate_pipeline``)."""

    mode: str = DEFAULT_MODE
    k: int = DEFAULT_K
    metrics_depth: int = 10

    def __post_init__(self) -> None:
        if not isinstance(self.mode, str) or not self.mode:
            raise ValueError(f"retrieval mode must be a non-empty string, got {self.mode!r}")
        for name in ("k", "metrics_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"retrieval {name} must be a positive integer, got {value!r}")

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
    #: Decoding temperature (0 = greedy): a bundle pins it, like the answer length.
    temperature: float = 0.0
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
        """One answer (serving, ``ask``): the same first search and prompt chunks as
        :meth:`answer_many`, without the deeper searches that fill the metrics' ranking
        (nobody reads it here, and serving latency should not pay for it)."""
        return self.answer_many(
            [question],
            max_new_tokens=max_new_tokens,
            filters=filters,
            observer=observer,
            principal=principal,
            gate=gate,
            fill_depth=False,
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
        fill_depth: bool = True,
    ) -> list[Answer]:
        """Answers in the generator's batches (see :func:`rag.answer.answer_many`);
        ``principal`` = who asks (the retriever filters by audience; None = public only).
        ``Answer.ranked`` holds ``metrics_depth`` distinct documents when the index has them
        (``fill_depth=False``: only the first search's chunks)."""
        return answer_many(
            questions,
            retriever=self.retriever,
            generator=self.generator,
            prompt=self.prompt,
            k=self.retrieval.k,
            mode=self.retrieval.mode,
            max_new_tokens=max_new_tokens or self.max_new_tokens,
            temperature=self.temperature,
            depth=self.retrieval.metrics_depth,
            filters=filters,
            observer=observer,
            principal=principal,
            gate=gate,
            fill_depth=fill_depth,
        )

    def context(self, question: str, principal: Principal | None = None) -> list[HitLike]:
        """The chunks this pipeline would put in the prompt for ``question`` asked by
        ``principal`` (None = public documents only).

        The search asks for as many chunks as answering does (``max(k, metrics_depth)``) and
        keeps the top k: for kNN-based modes the size of the search can change which chunks
        come first, and the context must be exactly what an answer would get."""
        extra = {"principal": principal} if principal is not None else {}
        size = max(self.retrieval.k, self.retrieval.metrics_depth)
        hits = self.retriever.search(question, mode=self.retrieval.mode, k=size, **extra)
        return list(hits)[: self.retrieval.k]

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
