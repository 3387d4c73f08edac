"""``answer(question)``: retrieve → fenced prompt → generate → cited answer with timings.

Citations. The prompt asks for ``[chunk:ID]``; ``rag.prompts.parse_citations`` keeps only
ids that were actually retrieved (a model cannot cite a chunk it never saw, and an injected
chunk cannot make it cite a fake one). A 135M model often cites nothing, so when no valid
citation is found the answer falls back to *inferred* citations: the retrieved chunks that
share the most content words with the answer text (at least ``MIN_OVERLAP_TOKENS`` words, or
all of a shorter answer's, and
at least half the best chunk's overlap). Those are flagged ``citations_inferred=True`` so
evaluation can score model-made and inferred citations apart;
an answer that overlaps no chunk cites nothing.

Depth. Retrieval metrics read a ranking of *documents* (nDCG@10 = 10 documents), while the
index holds chunks: ten chunks may come from four documents. With a ``depth``,
:func:`answer_many` keeps fetching deeper (doubling, up to :data:`MAX_RANKING_CHUNKS` chunks)
until the ranking holds ``depth`` distinct documents or the index runs out. The prompt's chunks
always come from the first search, and the deeper searches only *append* chunks the first one
did not return: for kNN-based modes a larger size can change the approximate search (more
candidates, more to rescore) and so the order at the top, and an answer must not change
because metrics wanted a deeper ranking.
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
from llmops_dagster.rag.extractive import ExtractiveAnswerer
from llmops_dagster.rag.hits import HitLike, content_tokens
from llmops_dagster.rag.prompts import PromptTemplate, load_prompt, parse_citations

DEFAULT_MODE = "hybrid_rrf"
DEFAULT_K = 5
DEFAULT_MAX_NEW_TOKENS = 128
MIN_OVERLAP_TOKENS = 2
#: The deepest search made to fill a ranking with ``depth`` distinct documents: a bound on the
#: work for an index whose documents have very many chunks each (the ranking is then shorter
#: than ``depth`` and a warning says so).
MAX_RANKING_CHUNKS = 1000

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


def infer_citations(answer_text: str, hits: Sequence[HitLike]) -> list[str]:
    """Retrieved chunks whose text shares the most content words with the answer."""
    answer_words = set(content_tokens(answer_text))
    if not answer_words:
        return []
    overlaps = [(len(answer_words & set(content_tokens(h.text))), h.chunk_id) for h in hits]
    best = max((n for n, _ in overlaps), default=0)
    # A one-word answer ("2019.") can only overlap by one word.
    needed = min(MIN_OVERLAP_TOKENS, len(answer_words))
    if best < needed:
        return []
    threshold = max(needed, (best + 1) // 2)
    ranked = sorted(overlaps, key=lambda item: -item[0])  # stable: ties keep retrieval order
    return [chunk_id for n, chunk_id in ranked if n >= threshold]


def _citations(text: str, hits: Sequence[HitLike]) -> tuple[list[str], bool]:
    cited = parse_citations(text, [h.chunk_id for h in hits])
    if cited:
        return cited, False
    return infer_citations(text, hits), True


def _retrieve(
    retriever: Retriever,
    question: str,
    mode: str,
    k: int,
    filters: Mapping[str, Any] | None,
    observer: StageObserver,
    principal: Principal | None,
) -> tuple[list[HitLike], float]:
    extra = _search_kwargs(filters, principal)
    shown: dict[str, Any] = {"filters": extra["filters"]} if "filters" in extra else {}
    if principal is not None:
        shown["principal"] = principal.name
        shown["groups"] = principal.visible_groups
    with observer.stage("retrieve", query=question, mode=str(mode), k=k, **shown) as out:
        started = time.perf_counter()
        hits = list(retriever.search(question, mode=mode, k=k, **extra))
        out["hits"] = hits
    return hits, (time.perf_counter() - started) * 1000


def _search_kwargs(
    filters: Mapping[str, Any] | None, principal: Principal | None
) -> dict[str, Any]:
    # Passed only when given, so filter-less retrievers (the Protocol) fit too.
    extra: dict[str, Any] = {"filters": dict(filters)} if filters else {}
    if principal is not None:
        extra["principal"] = principal
    return extra


def _distinct_docs(hits: Sequence[HitLike]) -> int:
    return len({hit.doc_id for hit in hits})


def _extend_ranking(
    first: Sequence[HitLike], deeper: Sequence[HitLike], depth: int
) -> list[HitLike]:
    """``first`` unchanged, then — in ``deeper``'s order — the first chunk of each document
    ``first`` lacks, until the ranking holds ``depth`` distinct documents. (More chunks of a
    document already ranked would change no document-level metric.)"""
    ranking = list(first)
    docs = {hit.doc_id for hit in first}
    for hit in deeper:
        if len(docs) >= depth:
            break
        if hit.doc_id not in docs:
            ranking.append(hit)
            docs.add(hit.doc_id)
    return ranking


def fill_ranking(
    retriever: Retriever,
    question: str,
    first: Sequence[HitLike],
    *,
    mode: str,
    asked: int,
    depth: int,
    filters: Mapping[str, Any] | None = None,
    principal: Principal | None = None,
) -> list[HitLike]:
    """The ranking of ``question`` with at least ``depth`` distinct documents when the index
    has them: ``first`` (the search of ``asked`` chunks whose top k the prompt gets) extended
    from deeper searches of 2x, 4x, … ``asked`` chunks (at most :data:`MAX_RANKING_CHUNKS`).

    Stops as soon as ``depth`` documents are in, or a search returns fewer hits than asked
    (the index — what this principal may read, under these filters — ran out).
    """
    ranking = list(first)
    if _distinct_docs(ranking) >= depth or len(first) < asked:
        return ranking
    extra = _search_kwargs(filters, principal)
    size = asked
    while size < MAX_RANKING_CHUNKS:
        size = min(size * 2, MAX_RANKING_CHUNKS)
        deeper = list(retriever.search(question, mode=mode, k=size, **extra))
        ranking = _extend_ranking(first, deeper, depth)
        if _distinct_docs(ranking) >= depth or len(deeper) < size:
            return ranking
    log.warning(
        "ranking for %r holds %d of %d documents after %d chunks (MAX_RANKING_CHUNKS): "
        "retrieval metrics at depth %d see fewer documents",
        question,
        _distinct_docs(ranking),
        depth,
        size,
        depth,
    )
    return ranking


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
        cited_ids, inferred = cited if cited is not None else _citations(gen.text, hits)
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
