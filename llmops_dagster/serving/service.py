"""What the HTTP layer calls: answer, feedback, health — free of FastAPI so it is testable and
reusable (the benchmark calls the same pipeline directly to measure the server's overhead)."""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Literal

from llmops_dagster.access import Principal
from llmops_dagster.rag.answer import Answer
from llmops_dagster.search.mapping import KEYWORD_FIELDS
from llmops_dagster.serving import trace_keys as keys
from llmops_dagster.serving.answer_cache import (
    BASE_BUNDLE,
    AnswerCache,
    CachedAnswer,
    CacheKey,
    ReplayPipeline,
    cache_key,
)
from llmops_dagster.serving.answer_log import (
    AnswerRecord,
    FeedbackChange,
    FeedbackRecord,
    ServingStore,
    UnknownTrace,
    served_chunks,
)
from llmops_dagster.serving.bundles import BundleHolder, ServedBundle
from llmops_dagster.serving.feedback_sync import AssessmentWriter
from llmops_dagster.serving.guards import AnswerGuard, Busy, GenerationLine
from llmops_dagster.serving.pricing import PriceTable
from llmops_dagster.serving.prometheus import ServerMetrics
from llmops_dagster.serving.rollout import RolloutPlan, arm_for
from llmops_dagster.serving.tracing import AnswerTracer, TraceContext

log = logging.getLogger(__name__)

#: Keyword fields a caller may filter on (others would let a request probe arbitrary fields).
FILTER_FIELDS = frozenset(KEYWORD_FIELDS) - {"content_hash"}


class BadRequest(ValueError):
    """The request is well-formed JSON but asks for something this server refuses."""


class Unavailable(RuntimeError):
    """A dependency (search cluster, generator endpoint) cannot answer right now."""


@dataclass(frozen=True)
class ServedAnswer:
    trace_id: str
    answer: Answer
    text: str  # what the caller sees: the answer after PII redaction
    principal: str
    guardrails: dict[str, Any]
    bundle: ServedBundle
    cost_usd: float | None
    queue_ms: float
    embed_ms: float | None
    total_ms: float
    cached: bool = False  # replayed from the answer cache: nothing retrieved or generated
    arm: str = "champion"  # which alias answered: champion, or challenger (a rollout split)

    def to_response(self) -> dict[str, Any]:
        a = self.answer
        titles = {c.chunk_id: c for c in a.retrieved}
        return {
            "trace_id": self.trace_id,
            "answer": self.text,
            "citations": [
                {
                    "chunk_id": cid,
                    "doc_id": titles[cid].doc_id,
                    "title": titles[cid].title,
                    "score": round(titles[cid].score, 6),
                    "text": titles[cid].text,
                }
                for cid in a.cited_chunk_ids
                if cid in titles
            ],
            "citations_inferred": a.citations_inferred,
            "retrieved": [
                {"chunk_id": c.chunk_id, "doc_id": c.doc_id, "title": c.title, "score": c.score}
                for c in a.retrieved
            ],
            "bundle": {
                "uri": self.bundle.uri,
                "version": self.bundle.number,
                "prompt_version": f"{a.prompt_name}@{a.prompt_version}",
                "model_id": a.model_id,
                "retrieval_mode": a.mode,
                "k": a.k,
            },
            "timings_ms": {
                "queue": round(self.queue_ms, 3),
                "embed_query": None if self.embed_ms is None else round(self.embed_ms, 3),
                "retrieve": a.retrieve_ms,
                "prompt": a.prompt_ms,
                "generate": a.generate_ms,
                "total": round(self.total_ms, 3),
            },
            "tokens": {"prompt": a.prompt_tokens, "completion": a.completion_tokens},
            "cost_usd": self.cost_usd,
            "principal": self.principal,
            "guardrails": self.guardrails,
            "cached": self.cached,
            "rollout": self.arm,
        }


class AnswerService:
    def __init__(
        self,
        *,
        holder: BundleHolder,
        tracer: AnswerTracer,
        store: ServingStore,
        prices: PriceTable,
        metrics: ServerMetrics | None = None,
        assessments: AssessmentWriter | None = None,
        index_name: Callable[[], str | None] = lambda: None,
        index_model: Callable[[str], str | None] = lambda index: None,
        health_checks: Mapping[str, Callable[[], str]] | None = None,
        max_concurrent_generations: int = 1,
        max_question_chars: int = 2000,
        max_waiting: int = 16,
        queue_timeout_s: float = 60.0,
        injection_policy: Literal["flag", "refuse"] = "flag",
        min_relevance: float = 0.62,
        health_ttl_s: float = 2.0,
        answer_cache: AnswerCache | None = None,
        challenger: BundleHolder | None = None,
        rollout: RolloutPlan | None = None,
    ) -> None:
        self.holder = holder
        # Staged rollout (serving/rollout.py): the challenger alias's bundle answers a sticky
        # share of callers, or shadows the champion (answered, traced, logged, never returned).
        self.challenger = challenger
        self.rollout = rollout or RolloutPlan()
        self.arm_answers: dict[str, int] = {"champion": 0, "challenger": 0}
        self.shadow_results: dict[str, int] = {"answered": 0, "failed": 0}
        self._shadow_pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
            if self.rollout.mode == "shadow"
            else None
        )
        self.tracer = tracer
        self.store = store
        self.prices = prices
        self.metrics = metrics or ServerMetrics()
        self.assessments = assessments or AssessmentWriter()
        self.index_name = index_name
        #: physical index → the embedding model it records: the model that embeds the query
        #: searching it (after a promotion of a fine-tuned model, not the bundle's record).
        self.index_model = index_model
        self.health_checks = dict(health_checks or {})
        # /healthz is open to anyone: a flood of probes must not become a flood of cluster and
        # tracking-store calls, so one check's result answers every probe for health_ttl_s.
        self.health_ttl_s = health_ttl_s
        self._health_lock = threading.Lock()
        self._health: tuple[float, bool, dict[str, Any]] | None = None
        self.health_runs = 0
        self.max_question_chars = max_question_chars
        # Generation is the expensive, memory-hungry part: a burst waits here in line (or is
        # refused with Retry-After once the line is full).
        self.line = GenerationLine(max_concurrent_generations, max_waiting, queue_timeout_s)
        self.injection_policy = injection_policy
        self.min_relevance = min_relevance
        # Repeated questions of one audience (serving/answer_cache.py; off unless sized). It
        # empties itself when the champion moves (here) or the alias's index does (answer()).
        # `is None`, not `or`: an empty cache has len 0 and is falsy.
        self.cache = answer_cache if answer_cache is not None else AnswerCache()
        if holder.loaded:
            self.cache.follow(bundle=holder.current.uri or BASE_BUNDLE)
        holder.on_swap.append(lambda s: self.cache.follow(bundle=s.uri or BASE_BUNDLE))
        m = self.metrics
        cache = self.cache
        m.watch_counter("llmops_answer_cache_hits", "Answers replayed from the answer cache",
                        lambda: cache.hits)  # fmt: skip
        m.watch_counter("llmops_answer_cache_misses",
                        "Cacheable questions not in the answer cache (answered, then stored)",
                        lambda: cache.misses)  # fmt: skip
        m.watch_counter("llmops_answer_cache_clears",
                        "Answer cache emptied: the champion or the alias's index moved",
                        lambda: cache.clears)  # fmt: skip
        m.watch("llmops_answer_cache_entries", "Answers in the answer cache", lambda: len(cache))
        arms, shadows = self.arm_answers, self.shadow_results
        m.watch_counter("llmops_rollout_challenger_answers",
                        "Answers returned from the challenger bundle (rollout split)",
                        lambda: arms["challenger"])  # fmt: skip
        m.watch_counter("llmops_rollout_shadow_answers",
                        "Challenger answers made in shadow (traced, never returned)",
                        lambda: shadows["answered"])  # fmt: skip
        m.watch_counter("llmops_rollout_shadow_failures", "Shadow answers that failed",
                        lambda: shadows["failed"])  # fmt: skip
        m.watch(
            "llmops_traces_started",
            "Answers traced (handed to the exporter)",
            lambda: tracer.started,
        )
        m.watch(
            "llmops_traces_dropped",
            "Traces MLflow's exporter reported lost",
            lambda: tracer.dropped,
        )
        m.watch("llmops_bundle_swaps", "Champion swaps since start", lambda: holder.swaps)
        m.watch(
            "llmops_bundle_load_errors", "Failed champion refreshes", lambda: holder.load_errors
        )
        m.watch("llmops_feedback_sync_failed", "Feedback not copied to MLflow",
                lambda: self.assessments.failed)  # fmt: skip
        m.watch("llmops_busy_refusals", "Requests refused: generation line full",
                lambda: self.line.refused)  # fmt: skip
        m.watch("llmops_health_checks", "Health checks run (each answers probes for a while)",
                lambda: self.health_runs)  # fmt: skip

    # --- answers ---------------------------------------------------------------------------
    def check_filters(self, filters: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if not filters:
            return None
        unknown = sorted(set(filters) - FILTER_FIELDS)
        if unknown:
            raise BadRequest(
                f"cannot filter on {', '.join(unknown)}; filterable fields: "
                f"{', '.join(sorted(FILTER_FIELDS))}"
            )
        for name, value in filters.items():
            values = value if isinstance(value, list) else [value]
            if not values or not all(isinstance(v, str) and v for v in values):
                raise BadRequest(f"filter {name!r} needs a non-empty string or list of strings")
        return dict(filters)

    def answer(
        self,
        question: str,
        *,
        filters: Mapping[str, Any] | None = None,
        principal: Principal | None = None,
    ) -> ServedAnswer:
        """Answer ``question`` for ``principal`` (None: the public principal) with the served
        bundle, under guardrails: injection screen, relevance refusal, PII-redacted output."""
        from elasticsearch import ApiError, TransportError

        from llmops_dagster.models.base import GeneratorError
        from llmops_dagster.search.client import ElasticsearchUnavailable
        from llmops_dagster.search.retriever import SearchError

        question = question.strip()
        if not question:
            raise BadRequest("question is empty")
        if len(question) > self.max_question_chars:
            raise BadRequest(
                f"question has {len(question)} characters; the limit is {self.max_question_chars}"
            )
        checked = self.check_filters(filters)
        principal = principal or Principal.public()
        guard = AnswerGuard(question, self.injection_policy, self.min_relevance)
        # One bundle for the whole request, even across a swap.
        served, arm = self._served_for(principal)
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        key: CacheKey | None = None
        cached: CachedAnswer | None = None
        try:
            index = self.index_name()
            context = self._context_on(served, index)
            self.cache.follow(index=index or "")  # the alias moved: the cache empties
            if self._cacheable(served, guard):
                key = cache_key(
                    bundle_uri=served.uri,
                    index=index,
                    visible_groups=principal.visible_groups,
                    filters=checked,
                    question=question,
                )
                cached = self.cache.get(key)
            if cached is not None:
                # A hit takes no generation slot: nothing is generated. It is still traced
                # (one trace per answer), with the cached answer's audience and guard outcome.
                queue_ms = 0.0
                guard.chunk_flags = {c: list(f) for c, f in cached.chunk_flags.items()}
                guard.refused = cached.refused
                traced = self.tracer.answer(
                    ReplayPipeline(cached, self.cache.age_s(cached)),
                    question,
                    context=context,
                    filters=checked,
                    principal=principal,
                    guard=guard,
                    cost_fn=lambda a: 0.0,  # nothing generated, nothing to pay
                    queue_ms=queue_ms,
                    seen_audiences=[cached.audience],
                    extra_metadata={
                        keys.CACHE_HIT: "true",
                        keys.CACHE_SOURCE_TRACE: cached.source_trace_id,
                    },
                    extra_tags={keys.TAG_CACHE: "hit", keys.TAG_ROLLOUT: arm},
                )
            else:
                with self.line:
                    queue_ms = (time.perf_counter() - started) * 1000
                    traced = self.tracer.answer(
                        served.pipeline,
                        question,
                        context=context,
                        filters=checked,
                        principal=principal,
                        guard=guard,
                        cost_fn=self._cost_fn(served),
                        queue_ms=queue_ms,
                        extra_metadata={keys.CACHE_HIT: "false"},
                        extra_tags={
                            keys.TAG_CACHE: "miss" if key is not None else "bypass",
                            keys.TAG_ROLLOUT: arm,
                        },
                    )
        except (ElasticsearchUnavailable, SearchError, TransportError, ApiError) as exc:
            self.metrics.answer_errors.labels("search").inc()
            # The message (URLs, cluster details) goes to the log, the caller gets its kind.
            log.warning("search failed: %s: %s", type(exc).__name__, exc)
            raise Unavailable(f"search is unavailable ({type(exc).__name__})") from exc
        except Busy:
            raise
        except GeneratorError as exc:
            self.metrics.answer_errors.labels("generator").inc()
            log.warning("generation failed: %s: %s", type(exc).__name__, exc)
            raise Unavailable(f"the generator is unavailable ({type(exc).__name__})") from exc
        except Exception:
            self.metrics.answer_errors.labels("internal").inc()
            raise
        finally:
            self.metrics.in_flight.dec()
        total_ms = (time.perf_counter() - started) * 1000
        result = traced.answer
        if key is not None and cached is None:
            self.cache.put(
                key,
                CachedAnswer(
                    answer=result,
                    audience=list(traced.audience),
                    chunk_flags={c: list(f) for c, f in guard.chunk_flags.items()},
                    refused=guard.refused,
                    source_trace_id=traced.trace_id,
                ),
            )
        self.metrics.guardrails.labels(guard.refused or "answered").inc()
        self.store.record_answer(
            _answer_record(question, traced, served, principal, total_ms, cached is not None)
        )
        self.arm_answers[arm] += 1
        shadow = self._shadow_bundle()
        if self._shadow_pool is not None and shadow is not None:
            self._shadow_pool.submit(self._answer_in_shadow, question, checked, principal, shadow)
        self.metrics.latency.observe(total_ms / 1000)
        self.metrics.tokens.labels("prompt").inc(result.prompt_tokens)
        self.metrics.tokens.labels("completion").inc(result.completion_tokens)
        return ServedAnswer(
            trace_id=traced.trace_id,
            answer=result,
            text=traced.text,
            principal=principal.name,
            guardrails={**guard.report(), "redacted": traced.redacted},
            bundle=served,
            cost_usd=traced.cost_usd,
            queue_ms=queue_ms,
            embed_ms=traced.embed_ms,
            total_ms=total_ms,
            cached=cached is not None,
            arm=arm,
        )

    # --- staged rollout --------------------------------------------------------------------
    def _challenger_bundle(self) -> ServedBundle | None:
        """The loaded challenger, unless there is none or it is the champion's bundle."""
        if self.challenger is None or not self.challenger.loaded:
            return None
        challenger = self.challenger.current
        if challenger.version is None or challenger.uri == self.holder.current.uri:
            return None
        return challenger

    def _served_for(
        self, principal: Principal
    ) -> tuple[ServedBundle, Literal["champion", "challenger"]]:
        champion = self.holder.current
        challenger = self._challenger_bundle() if self.rollout.mode == "split" else None
        if challenger is None:
            return champion, "champion"
        if arm_for(self.rollout, principal.name, challenger.number) == "challenger":
            return challenger, "challenger"
        return champion, "champion"

    def _context_on(self, served: ServedBundle, index: str | None) -> TraceContext:
        """The bundle's trace context on the physical index the alias points at now, with the
        embedding model that index records (the retriever embeds the query with it)."""
        if not index:
            return served.context
        model = self.index_model(index) or served.context.embedding_model_id
        return replace(served.context, index_name=index, embedding_model_id=model)

    def _shadow_bundle(self) -> ServedBundle | None:
        return self._challenger_bundle() if self.rollout.mode == "shadow" else None

    def _answer_in_shadow(
        self,
        question: str,
        filters: dict[str, Any] | None,
        principal: Principal,
        served: ServedBundle,
    ) -> None:
        """The challenger's answer to a question the champion answered: traced and logged
        under the challenger's version (so online judging and serving metrics compare the two
        on the same questions), never returned. It queues for a generation slot like any
        answer; a failure is counted and logged, never raised to anyone."""
        guard = AnswerGuard(question, self.injection_policy, self.min_relevance)
        started = time.perf_counter()
        try:
            context = self._context_on(served, self.index_name())
            with self.line:
                traced = self.tracer.answer(
                    served.pipeline,
                    question,
                    context=context,
                    filters=filters,
                    principal=principal,
                    guard=guard,
                    cost_fn=self._cost_fn(served),
                    queue_ms=0.0,
                    extra_metadata={keys.ROLLOUT: "shadow"},
                    extra_tags={keys.TAG_ROLLOUT: "shadow"},
                )
            total_ms = (time.perf_counter() - started) * 1000
            self.store.record_answer(
                _answer_record(question, traced, served, principal, total_ms, False)
            )
            self.shadow_results["answered"] += 1
        except Exception as exc:  # a shadow must never disturb the champion's service
            self.shadow_results["failed"] += 1
            log.warning("shadow answer failed: %s: %s", type(exc).__name__, exc)

    def drain_shadows(self) -> None:
        """Wait for queued shadow answers (tests, shutdown)."""
        if self._shadow_pool is not None:
            self._shadow_pool.submit(lambda: None).result()

    def _cost_fn(self, served: ServedBundle) -> Callable[[Any], float | None]:
        """What an answer of ``served`` cost (the price table; 0 for a local model)."""
        return lambda a: self.prices.cost(
            a.model_id, a.prompt_tokens, a.completion_tokens, local=served.local
        )

    def _cacheable(self, served: ServedBundle, guard: AnswerGuard) -> bool:
        """Whether this request may use the answer cache: it is on, the bundle decodes
        greedily (temperature 0: the same prompt gives the same answer; a sampling bundle is
        meant to vary) and the injection screen flagged nothing in this question (a flagged
        question always takes the full path, so its flags and refusal are its own)."""
        temperature = getattr(served.pipeline, "temperature", None)
        return self.cache.enabled and temperature == 0 and not guard.question_flags

    # --- feedback --------------------------------------------------------------------------
    def feedback(
        self,
        trace_id: str,
        *,
        rating: str,
        user: str = "anonymous",
        correction: str | None = None,
        comment: str | None = None,
        principal: Principal | None = None,
    ) -> tuple[FeedbackRecord, FeedbackChange]:
        """Store (idempotently) and copy to MLflow; raises :class:`UnknownTrace` for an answer
        this server never gave — and for one ``principal`` (None: public) may not read, so that
        a trace id cannot be used to learn that a confidential answer exists."""
        principal = principal or Principal.public()
        audience = self.store.audiences([trace_id]).get(trace_id)
        if audience is not None and not principal.can_read_all(audience):
            raise UnknownTrace(trace_id)
        record, change = self.store.record_feedback(
            trace_id, user, rating,  # type: ignore[arg-type]
            correction=(correction or "").strip() or None,
            comment=(comment or "").strip() or None,
        )  # fmt: skip
        if change != "unchanged":
            self.metrics.feedback.labels(rating).inc()
            self.assessments.submit(record, audience)
        return record, change

    # --- health ----------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        """(ok, report): the last check's result while it is younger than ``health_ttl_s``,
        else a new check (concurrent callers wait for that one instead of starting their own).

        The report is for operators and still holds no exception text: a failed check says
        its kind (the exception type), and the message goes to the server's log, because a
        message may carry URLs with credentials or a cluster's internals."""
        with self._health_lock:
            cached = self._health
            if cached is None or time.monotonic() - cached[0] >= self.health_ttl_s:
                ok, report = self._check_health()
                self.health_runs += 1
                cached = self._health = (time.monotonic(), ok, report)
        return cached[1], copy.deepcopy(cached[2])

    def _check_health(self) -> tuple[bool, dict[str, Any]]:
        report: dict[str, Any] = {}
        ok = True
        for name, check in self.health_checks.items():
            try:
                report[name] = {"ok": True, "detail": check()}
            except Exception as exc:
                ok = False
                log.warning("health check %s failed: %s: %s", name, type(exc).__name__, exc)
                report[name] = {"ok": False, "error": type(exc).__name__}
        if self.holder.loaded:
            served = self.holder.current
            report["bundle"] = {
                "ok": True,
                "uri": served.uri,
                "version": served.number,
                "loaded_at": served.loaded_at,
                "swaps": self.holder.swaps,
                "refresh_errors": self.holder.load_errors,
                "last_refresh_error": self.holder.last_error_kind,
            }
        else:
            ok = False
            report["bundle"] = {"ok": False, "detail": "no bundle loaded"}
        report["traces"] = {"started": self.tracer.started, "dropped": self.tracer.dropped}
        return ok, report

    def close(self) -> None:
        if self._shadow_pool is not None:
            self._shadow_pool.shutdown(wait=True)
        if self.challenger is not None:
            self.challenger.stop()
        self.holder.stop()
        self.assessments.drain(timeout_s=10)
        self.assessments.close()
        self.tracer.close()


def _answer_record(
    question: str,
    traced: Any,
    served: ServedBundle,
    principal: Principal,
    total_ms: float,
    cache_hit: bool,
) -> AnswerRecord:
    result = traced.answer
    return AnswerRecord(
        trace_id=traced.trace_id,
        question=question,
        answer=traced.text,
        cited_chunk_ids=list(result.cited_chunk_ids),
        retrieved=served_chunks(result.retrieved),
        bundle_uri=served.uri,
        bundle_version=served.number,
        total_ms=round(total_ms, 3),
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        cost_usd=traced.cost_usd,
        asker_groups=sorted(principal.groups),
        audience=traced.audience,
        cache_hit=cache_hit,
        citations_inferred=result.citations_inferred,
    )


def feedback_payload(record: FeedbackRecord, change: FeedbackChange) -> dict[str, Any]:
    return {**record.to_dict(), "change": change}


def unknown_trace_message(trace_id: str) -> str:
    return (
        f"no answer with trace id {trace_id!r} was served here; feedback needs the trace_id "
        "returned by POST /v1/answer"
    )


__all__: Sequence[str] = ("AnswerService", "BadRequest", "Unavailable", "UnknownTrace")
