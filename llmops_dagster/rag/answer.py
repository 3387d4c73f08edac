"""``answer(question)``: retrieve → fenced prompt → generate → cited answer with timings.

Citations: the ids the model cited among the retrieved chunks, else inferred from overlapping
words (:mod:`llmops_dagster.rag.citations`). Depth: the ranking retrieval metrics read is
filled to ``depth`` distinct documents by deeper searches that only append
(:mod:`llmops_dagster.rag.ranking`); the prompt's chunks always come from the first search.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from llmops_dagster.access import Principal
from llmops_dagster.models.base import Generation, Generator
from llmops_dagster.rag.citations import citations_for, infer_citations
from llmops_dagster.rag.defaults import DEFAULT_K, DEFAULT_MAX_NEW_TOKENS, DEFAULT_MODE
from llmops_dagster.rag.extractive import ExtractiveAnswerer
from llmops_dagster.rag.hits import HitLike, content_tokens
from llmops_dagster.rag.prompts import PromptTemplate, load_prompt
from llmops_dagster.rag.ranking import fill_ranking, search_kwargs

# Importable from here as before: the hit protocol and the two jobs split out.
__all__ = [
    "NO_OBSERVER",
    "Answer",
    "HitLike",
    "RetrievedChunk",
    "Retriever",
    "StageObserver",
    "answer",
    "answer_many",
    "content_tokens",
    "fill_ranking",
    "infer_citations",
]


log = logging.getLogger(__name__)


class Retriever(Protocol):
    """Anything that searches chunks (``search.retriever.HybridRetriever`` fits). ``filters``
    is only passed when a caller gives some, so filter-less retrievers fit too."""

    def search(
        self, query: str, *, mode: str = DEFAULT_MODE, k: int = DEFAULT_K
    ) -> Sequence[HitLike]: ...


class StageObserver(Protocol):
    """Watches the stages of an answer (``retrieve``, ``generate``): the serving tracer turns
    each into an MLflow span. ``stage`` yields a dict the pipeline fills with the stage's
    results (``hits``, ``generations``) before the stage ends."""

    def stage(self, name: str, **inputs: Any) -> AbstractContextManager[dict[str, Any]]: ...


#: Sees the prompt chunks of a question; returns a refusal text, or None to generate.
Gate = Callable[[Sequence[HitLike]], str | None]


def _refused(
    question: str,
    text: str,
    hits: Sequence[HitLike],
    ranked: tuple[list[HitLike], float],
    template: PromptTemplate,
    model_id: str,
    mode: str,
    k: int,
) -> Answer:
    return Answer(
        answer_id=str(uuid.uuid4()),
        question=question,
        text=text,
        cited_chunk_ids=[],
        citations_inferred=False,
        retrieved=_chunks(hits),
        prompt_name=template.name,
        prompt_version=template.version,
        model_id=model_id,
        mode=mode,
        k=k,
        retrieve_ms=round(ranked[1], 3),
        prompt_ms=0.0,
        generate_ms=0.0,
        total_ms=round(ranked[1], 3),
        prompt_tokens=0,
        completion_tokens=0,
        finish_reason="refused",
        ranked=_chunks(ranked[0]),
    )


class _NoObserver:
    @contextmanager
    def stage(self, name: str, **inputs: Any) -> Iterator[dict[str, Any]]:
        yield {}


NO_OBSERVER: StageObserver = _NoObserver()


@dataclass(frozen=True)
class RetrievedChunk:
    chunk_id: str
    doc_id: str
    score: float
    title: str = ""
    text: str = ""


@dataclass
class Answer:
    """An answer and everything needed to trace, score and cost it."""

    answer_id: str
    question: str
    text: str
    cited_chunk_ids: list[str]
    #: True when the model cited nothing valid and the citations come from text overlap.
    citations_inferred: bool
    retrieved: list[RetrievedChunk]
    prompt_name: str
    prompt_version: str
    model_id: str
    mode: str
    k: int
    retrieve_ms: float
    prompt_ms: float
    generate_ms: float
    total_ms: float
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    #: The whole ranking retrieved for metrics (``depth`` ≥ k hits); the prompt got the top k.
    ranked: list[RetrievedChunk] = field(default_factory=list)

    @property
    def retrieved_ids(self) -> list[str]:
        return [chunk.chunk_id for chunk in self.retrieved]

    @property
    def ranked_doc_ids(self) -> list[str]:
        """Document ids of the full ranking (retrieval metrics read this, at its depth)."""
        return [chunk.doc_id for chunk in (self.ranked or self.retrieved)]

    @property
    def contexts(self) -> list[str]:
        """The retrieved texts, in rank order (what faithfulness metrics judge against)."""
        return [chunk.text for chunk in self.retrieved]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _retrieve(
    retriever: Retriever,
    question: str,
    mode: str,
    k: int,
    filters: Mapping[str, Any] | None,
    observer: StageObserver,
    principal: Principal | None,
) -> tuple[list[HitLike], float]:
    extra = search_kwargs(filters, principal)
    shown: dict[str, Any] = {"filters": extra["filters"]} if "filters" in extra else {}
    if principal is not None:
        shown["principal"] = principal.name
        shown["groups"] = principal.visible_groups
    with observer.stage("retrieve", query=question, mode=str(mode), k=k, **shown) as out:
        started = time.perf_counter()
        hits = list(retriever.search(question, mode=mode, k=k, **extra))
        out["hits"] = hits
    return hits, (time.perf_counter() - started) * 1000


def _chunks(hits: Sequence[HitLike]) -> list[RetrievedChunk]:
    return [
        RetrievedChunk(h.chunk_id, h.doc_id, float(h.score), h.title or "", h.text) for h in hits
    ]


def answer(
    question: str,
    *,
    retriever: Retriever,
    generator: Generator,
    prompt: PromptTemplate | None = None,
    k: int = DEFAULT_K,
    mode: str = DEFAULT_MODE,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
    depth: int | None = None,
) -> Answer:
    """Answer one question from the top ``k`` chunks ``retriever`` finds in ``mode``."""
    return answer_many(
        [question],
        retriever=retriever,
        generator=generator,
        prompt=prompt,
        k=k,
        mode=mode,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        depth=depth,
    )[0]


def answer_many(
    questions: Sequence[str],
    *,
    retriever: Retriever,
    generator: Generator | ExtractiveAnswerer,
    prompt: PromptTemplate | None = None,
    k: int = DEFAULT_K,
    mode: str = DEFAULT_MODE,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
    depth: int | None = None,
    filters: Mapping[str, Any] | None = None,
    observer: StageObserver = NO_OBSERVER,
    principal: Principal | None = None,
    gate: Gate | None = None,
    fill_depth: bool = True,
) -> list[Answer]:
    """Answer many questions: retrieval one by one, generation in the generator's batches.

    One search per question fetches ``max(k, depth)`` chunks: the top ``k`` go into the prompt,
    and the whole ranking is kept (``Answer.ranked``) so retrieval metrics are computed at the
    depth their names say, not over the prompt's few chunks. ``depth`` counts *documents*:
    when those chunks hold fewer than ``depth`` distinct documents and the index has more,
    deeper searches extend the ranking until it does (:func:`fill_ranking`; the prompt's chunks
    stay those of the first search). ``fill_depth=False`` skips that (a caller that reads no
    ranking, such as serving: same prompt chunks, no extra search). ``retrieve_ms`` times the
    first search only: the deeper ones serve metrics, not the answer.
    ``generate_ms`` of each answer is the wall time of the batched generate call (what each
    caller waited); ``total_ms`` = its own retrieval + prompt time + that generate time.
    An :class:`~llmops_dagster.rag.extractive.ExtractiveAnswerer` answers from the top ``k``
    chunks without a model (no prompt, no tokens; its citations are the sentences' chunks).
    ``filters`` (keyword field → value(s)) narrow every search; ``observer`` sees each stage.
    ``principal`` is passed to the retriever (which filters by audience inside the search).
    ``gate`` sees each question's prompt chunks before generation and may return a refusal
    text instead (no generation, ``finish_reason="refused"``, no citations).
    """
    if not questions:
        return []
    template = prompt or load_prompt()
    search_k = max(k, depth or k)
    retrieved: list[tuple[list[HitLike], float]] = []
    for question in questions:
        if not question or not question.strip():
            raise ValueError("cannot answer an empty question")
        hits, retrieve_ms = _retrieve(
            retriever, question, mode, search_k, filters, observer, principal
        )
        if depth and fill_depth:
            hits = fill_ranking(
                retriever,
                question,
                hits,
                mode=mode,
                asked=search_k,
                depth=depth,
                filters=filters,
                principal=principal,
            )
        retrieved.append((hits, retrieve_ms))
    # The ranking starts with the first search unchanged, so these are its top k.
    contexts = [hits[:k] for hits, _ in retrieved]
    refusals = [gate(hits) if gate is not None else None for hits in contexts]
    kept = [i for i, refusal in enumerate(refusals) if refusal is None]
    generated = iter(
        _generate(
            [questions[i] for i in kept],
            [retrieved[i] for i in kept],
            [contexts[i] for i in kept],
            generator=generator,
            template=template,
            mode=str(mode),
            k=k,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            observer=observer,
        )
        if kept
        else []
    )
    # Refused questions are answered without the model; the others come from one batch.
    return [
        next(generated)
        if refusal is None
        else _refused(q, refusal, hits, ranked, template, generator.model_id, str(mode), k)
        for q, refusal, hits, ranked in zip(questions, refusals, contexts, retrieved, strict=True)
    ]


def _generate(
    questions: Sequence[str],
    retrieved: Sequence[tuple[list[HitLike], float]],
    contexts: Sequence[Sequence[HitLike]],
    *,
    generator: Generator | ExtractiveAnswerer,
    template: PromptTemplate,
    mode: str,
    k: int,
    max_new_tokens: int,
    temperature: float,
    observer: StageObserver,
) -> list[Answer]:
    prompt_ms: list[float] = []
    cited_by_model: list[tuple[list[str], bool] | None] = []
    if isinstance(generator, ExtractiveAnswerer):
        with observer.stage("generate", model_id=generator.model_id, extractive=True) as out:
            extracted = generator.answer_many(list(questions), contexts)
            generations = [
                Generation(text=e.text, prompt_tokens=0, completion_tokens=0, seconds=e.seconds)
                for e in extracted
            ]
            out["generations"] = generations
        prompt_ms = [0.0] * len(questions)
        cited_by_model = [(list(e.cited_chunk_ids), False) for e in extracted]
    else:
        prompts: list[list[dict[str, str]]] = []
        for question, hits in zip(questions, contexts, strict=True):
            started = time.perf_counter()
            prompts.append(template.messages(question, hits))
            prompt_ms.append((time.perf_counter() - started) * 1000)
        with observer.stage(
            "generate",
            model_id=generator.model_id,
            prompt_version=f"{template.name}@{template.version}",
            max_new_tokens=max_new_tokens,
        ) as out:
            generations = generator.generate(
                prompts, max_new_tokens=max_new_tokens, temperature=temperature
            )
            out["generations"] = generations
        cited_by_model = [None] * len(questions)
    answers = []
    for question, (ranked, retrieve_ms), hits, p_ms, gen, cited in zip(
        questions, retrieved, contexts, prompt_ms, generations, cited_by_model, strict=True
    ):
        cited_ids, inferred = cited if cited is not None else citations_for(gen.text, hits)
        generate_ms = gen.seconds * 1000
        answers.append(
            Answer(
                answer_id=str(uuid.uuid4()),
                question=question,
                text=gen.text,
                cited_chunk_ids=cited_ids,
                citations_inferred=inferred,
                retrieved=_chunks(hits),
                prompt_name=template.name,
                prompt_version=template.version,
                model_id=generator.model_id,
                mode=str(mode),
                k=k,
                retrieve_ms=round(retrieve_ms, 3),
                prompt_ms=round(p_ms, 3),
                generate_ms=round(generate_ms, 3),
                total_ms=round(retrieve_ms + p_ms + generate_ms, 3),
                prompt_tokens=gen.prompt_tokens,
                completion_tokens=gen.completion_tokens,
                finish_reason=gen.finish_reason,
                ranked=_chunks(ranked),
            )
        )
    return answers
