"""One MLflow trace per served answer: spans ``answer`` → ``retrieve`` (→ ``embed_query``) and
``generate``, with chunk ids/scores, prompt and bundle versions, tokens, latency and cost.

Never blocking the user: spans are built in memory on the request thread and MLflow's own
asynchronous exporter (``MLFLOW_ENABLE_ASYNC_TRACE_LOGGING``, on by default) writes them from a
bounded queue in the background. When the tracking store is down the exporter gives up on the
trace after its (shortened: ``config.apply_server_env_defaults``) retries, and when the queue
is full it discards new traces; both are logged by MLflow at WARNING level and counted here
(:class:`TraceExportWatch`), so ``/metrics`` shows ``llmops_traces_dropped_total`` rising while
answers keep succeeding. We chose *drop with a counter* over our own disk buffer: the answer log
(:mod:`llmops_dagster.serving.answer_log`) keeps every answer anyway, so a lost trace loses span
detail, not the record of what was answered.

What a trace may hold: every reader of the trace experiment reads every trace, whatever their
groups, so a span never gets raw text. A public answer's question, answer and generation are
PII-redacted before they are set; a *restricted* one (:mod:`llmops_dagster.serving.disclosure`:
the asker or a retrieved passage is beyond ``public``) leaves only ids, numbers, the bundle and
its audience (``llmops.audience``), its text replaced by a ``[withheld: audience …]`` marker:
the text itself stays in the serving store. Spans are exported as each one ends, so each span
sets its inputs and outputs when it ends, once retrieval has shown the passages, and failures
are recorded by exception type only (a message could quote the prompt).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from llmops_dagster.access import Principal
from llmops_dagster.rag.answer import Answer
from llmops_dagster.serving import trace_keys as keys
from llmops_dagster.serving.disclosure import (
    answer_audience,
    hit_audience,
    is_restricted,
    withheld,
)
from llmops_dagster.text.pii import redact_pii

log = logging.getLogger(__name__)

# MLflow's exporter logs these (mlflow 3.17: tracing/export/mlflow_v3.py, async_export_queue.py)
# when a trace is lost; a test pins them so an upgrade that rewords them fails loudly.
_EXPORT_LOGGERS = ("mlflow.tracing.export.mlflow_v3", "mlflow.tracing.export.async_export_queue")
_DROP_MESSAGES = ("Failed to send trace", "Trace export queue is full")

# Wall time of the query embedding in the current request (read back for the response timings).
_EMBED_MS: ContextVar[float | None] = ContextVar("embed_ms", default=None)


class TraceExportWatch(logging.Handler):
    """Counts traces MLflow's exporter reports as lost."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self._lock = threading.Lock()
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(_DROP_MESSAGES):
            with self._lock:
                self.dropped += 1

    def install(self) -> TraceExportWatch:
        for name in _EXPORT_LOGGERS:
            logging.getLogger(name).addHandler(self)
        return self

    def uninstall(self) -> None:
        for name in _EXPORT_LOGGERS:
            logging.getLogger(name).removeHandler(self)


class _Disclosure:
    """What one request may write to its spans (see :mod:`llmops_dagster.serving.disclosure`):
    PII-redacted text while the answer is public, only :func:`withheld` markers once its
    audience — the asker's groups and the retrieved passages' — is anything else. Every span
    takes its text from here at its end, after retrieval has shown the passages."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.passages: list[list[str]] = []

    def see(self, hits: Sequence[Any]) -> None:
        self.passages.extend(hit_audience(h) for h in hits)

    @property
    def audience(self) -> list[str]:
        return answer_audience(self.principal, self.passages)

    @property
    def restricted(self) -> bool:
        return is_restricted(self.audience)

    def text(self, value: str) -> str:
        return withheld(self.audience) if self.restricted else redact_pii(value).text

    def ids(self, values: Sequence[str]) -> list[str] | str:
        """Document ids name files (``fs:confidential/hr/salary-bands.md``): withheld with the
        text; chunk ids are content hashes and stay (the lineage walk needs them)."""
        return withheld(self.audience) if self.restricted else list(values)

    def filters(self, filters: Mapping[str, Any] | None) -> dict[str, Any]:
        if not filters:
            return {}
        if self.restricted:  # the values are the caller's text; the fields are ours
            return {name: withheld(self.audience) for name in filters}
        return dict(filters)


@contextmanager
def _span(name: str, span_type: str) -> Iterator[Any]:
    """``mlflow.start_span`` that records a failure as its exception *type* only: MLflow's own
    handling would store the message and stack (which may quote the question, a prompt or a
    URL with credentials) in the span's events."""
    import mlflow
    from mlflow.entities import SpanStatus, SpanStatusCode

    failed: BaseException | None = None
    with mlflow.start_span(name, span_type=span_type) as span:
        try:
            yield span
        except BaseException as exc:  # re-raised below, once the span has ended cleanly
            failed = exc
            span.set_status(SpanStatus(SpanStatusCode.ERROR, description=type(exc).__name__))
    if failed is not None:
        raise failed


class _SpanObserver:
    """Turns the pipeline's stages into child spans of the current span."""

    def __init__(self, disclosure: _Disclosure) -> None:
        self.disclosure = disclosure

    #: Stage inputs that are names and settings, never the caller's or a document's text.
    _PLAIN = frozenset({"mode", "model_id", "prompt_version", "principal"})

    def _inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(inputs)
        for name, value in out.items():  # the query, and any text a new stage may add
            if isinstance(value, str) and name not in self._PLAIN:
                out[name] = self.disclosure.text(value)
        if "filters" in out:
            out["filters"] = self.disclosure.filters(out["filters"])
        return out

    @contextmanager
    def stage(self, name: str, **inputs: Any) -> Iterator[dict[str, Any]]:
        from mlflow.entities import SpanType

        span_type = {"retrieve": SpanType.RETRIEVER, "generate": SpanType.LLM}.get(
            name, SpanType.UNKNOWN
        )
        with _span(name, span_type) as span:
            out: dict[str, Any] = {}
            try:
                yield out
            finally:
                # Written at the end, not the start: only then are the passages (and so the
                # answer's audience) known, and a span is exported when it ends.
                self._finish(span, inputs, out)

    def _finish(self, span: Any, inputs: Mapping[str, Any], out: Mapping[str, Any]) -> None:
        guard = self.disclosure
        if "hits" in out:
            hits = out["hits"]
            guard.see(hits)
            doc_ids = guard.ids([h.doc_id for h in hits])
            span.set_outputs(
                [
                    {
                        "chunk_id": h.chunk_id,
                        "doc_id": doc_ids[i] if isinstance(doc_ids, list) else doc_ids,
                        "score": float(h.score),
                    }
                    for i, h in enumerate(hits)
                ]
            )
            span.set_attributes(
                {
                    "chunk_ids": [h.chunk_id for h in hits],
                    "scores": [float(h.score) for h in hits],
                    "audiences": [",".join(hit_audience(h)) for h in hits],
                }
            )
        if "generations" in out:
            gens = out["generations"]
            span.set_outputs([guard.text(g.text) for g in gens])
            span.set_attributes(
                {
                    "tokens_in": sum(g.prompt_tokens for g in gens),
                    "tokens_out": sum(g.completion_tokens for g in gens),
                    "finish_reasons": [str(g.finish_reason) for g in gens],
                }
            )
        span.set_inputs(self._inputs(inputs))


class TracedEncoder:
    """Wraps the query embedder so each encode call is an ``embed_query`` span (inside the
    ``retrieve`` span: the retriever embeds the query as part of searching).

    The span holds no text: it ends before retrieval has shown the passages, so whether the
    answer will be restricted is not known yet; the (redacted) question is on the ``answer``
    and ``retrieve`` spans, written when that is known."""

    def __init__(self, inner: Any, model_id: str) -> None:
        self.inner = inner
        self.model_id = model_id

    def encode(self, texts: Sequence[str]) -> Any:
        from mlflow.entities import SpanType

        with _span("embed_query", SpanType.EMBEDDING) as span:
            span.set_inputs({"texts": len(texts), "chars": [len(t) for t in texts]})
            started = time.perf_counter()
            vectors = self.inner.encode(texts)
            _EMBED_MS.set((time.perf_counter() - started) * 1000)
            span.set_attributes({"model_id": self.model_id, "dims": int(vectors.shape[-1])})
            return vectors

    def __getattr__(self, name: str) -> Any:  # model_id, dims, ... of the wrapped embedder
        return getattr(self.inner, name)


@dataclass(frozen=True)
class TraceContext:
    """What identifies the answering bundle on the trace (strings; "" when unknown)."""

    bundle_uri: str
    bundle_version: str
    prompt_uri: str
    adapter_uri: str
    index_alias: str
    index_name: str
    embedding_model_id: str


@dataclass(frozen=True)
class TracedAnswer:
    trace_id: str
    answer: Answer
    text: str  # the answer as shown: PII redacted
    redacted: dict[str, int]  # kind → count removed from the answer
    audience: list[str]  # who may read it (serving.disclosure): ["public"] or the groups
    cost_usd: float | None
    embed_ms: float | None


class AnswerTracer:
    """Answers one question under a root ``answer`` span and returns its trace id."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        import mlflow

        # The server process owns MLflow's fluent state (the tracer needs an active
        # experiment); nothing else in this process traces.
        mlflow.set_tracking_uri(tracking_uri)
        self.experiment_id = mlflow.set_experiment(experiment).experiment_id
        self.watch = TraceExportWatch().install()
        self._lock = threading.Lock()
        self.started = 0

    def answer(
        self,
        pipeline: Any,
        question: str,
        *,
        context: TraceContext,
        filters: Mapping[str, Any] | None,
        principal: Principal,
        guard: Any,
        cost_fn: Any,
        queue_ms: float,
        seen_audiences: Sequence[Sequence[str]] = (),
        extra_metadata: Mapping[str, str] | None = None,
        extra_tags: Mapping[str, str] | None = None,
    ) -> TracedAnswer:
        import mlflow
        from mlflow.entities import SpanType

        disclosure = _Disclosure(principal)
        # Passage audiences known before the pipeline runs (an answer replayed from the
        # answer cache retrieves nothing: its original passages' audience comes from here).
        disclosure.passages.extend(list(a) for a in seen_audiences)
        with _span("answer", SpanType.CHAIN) as root:
            _EMBED_MS.set(None)
            started = time.perf_counter()
            try:
                result: Answer = pipeline.answer(
                    question,
                    filters=filters,
                    observer=_SpanObserver(disclosure),
                    principal=principal,
                    gate=guard,
                )
            finally:
                # At the end, like the stages: the retrieved passages decide what may be shown.
                root.set_inputs(
                    {
                        "question": disclosure.text(question),
                        "filters": disclosure.filters(filters),
                    }
                )
            total_ms = (time.perf_counter() - started) * 1000
            # PII on the way out too: a chunk indexed before redaction was switched on, or a
            # model that makes an address up, must not show one to the caller.
            redaction = redact_pii(result.text.strip())
            redacted = {kind: n for kind, n in redaction.counts.items() if n}
            cost = cost_fn(result)
            top = max((c.score for c in result.retrieved), default=None)
            audience = disclosure.audience
            restricted = disclosure.restricted
            shown_answer = withheld(audience) if restricted else redaction.text
            metadata = {
                keys.BUNDLE_URI: context.bundle_uri,
                keys.BUNDLE_VERSION: context.bundle_version,
                keys.PROMPT_VERSION: f"{result.prompt_name}@{result.prompt_version}",
                keys.PROMPT_URI: context.prompt_uri,
                keys.MODEL_ID: result.model_id,
                keys.ADAPTER_URI: context.adapter_uri,
                keys.INDEX_ALIAS: context.index_alias,
                keys.INDEX_NAME: context.index_name,
                keys.EMBEDDING_MODEL: context.embedding_model_id,
                keys.RETRIEVAL_MODE: result.mode,
                keys.RETRIEVAL_K: str(result.k),
                keys.PROMPT_TOKENS: str(result.prompt_tokens),
                keys.COMPLETION_TOKENS: str(result.completion_tokens),
                keys.COST_USD: "" if cost is None else f"{cost:.8f}",
                keys.TOP_SCORE: "" if top is None else f"{top:.6f}",
                keys.NO_HIT: "true" if not result.retrieved else "false",
                keys.CITED_CHUNK_IDS: json.dumps(result.cited_chunk_ids),
                keys.RETRIEVED_CHUNK_IDS: json.dumps(result.retrieved_ids),
                keys.RETRIEVED_DOC_IDS: json.dumps(
                    disclosure.ids([c.doc_id for c in result.retrieved])
                ),
                keys.TOTAL_MS: f"{total_ms:.3f}",
                keys.QUEUE_MS: f"{queue_ms:.3f}",
                keys.USER: principal.name,
                keys.GROUPS: json.dumps(principal.visible_groups),
                keys.AUDIENCE: json.dumps(audience),
                keys.RESTRICTED: "true" if restricted else "false",
                keys.INJECTION_FLAGS: json.dumps(list(guard.question_flags)),
                keys.CHUNK_INJECTION_FLAGS: json.dumps(guard.chunk_flags),
                keys.REFUSED: guard.refused or "",
                keys.REDACTED: json.dumps(redacted),
                **(extra_metadata or {}),
            }
            mlflow.update_current_trace(
                metadata=metadata,
                tags={keys.TAG_BUNDLE_VERSION: context.bundle_version or "base",
                      keys.TAG_SOURCE: "serve",
                      keys.TAG_AUDIENCE: ",".join(audience), **(extra_tags or {})},
                request_preview=disclosure.text(question)[:300],
                response_preview=shown_answer[:300],
            )  # fmt: skip
            root.set_attributes(
                {
                    "bundle_version": context.bundle_version,
                    "prompt_version": metadata[keys.PROMPT_VERSION],
                    "tokens_in": result.prompt_tokens,
                    "tokens_out": result.completion_tokens,
                    "latency_ms": round(total_ms, 3),
                    "cost_usd": cost if cost is not None else -1.0,
                }
            )
            root.set_outputs({"answer": shown_answer, "cited_chunk_ids": result.cited_chunk_ids})
            trace_id = root.trace_id
        with self._lock:
            self.started += 1
        return TracedAnswer(
            trace_id=trace_id,
            answer=result,
            text=redaction.text,
            redacted=redacted,
            audience=audience,
            cost_usd=cost,
            embed_ms=_EMBED_MS.get(),
        )

    @property
    def dropped(self) -> int:
        return self.watch.dropped

    def flush(self) -> None:
        import mlflow

        mlflow.flush_trace_async_logging()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.watch.uninstall()
