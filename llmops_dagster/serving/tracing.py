"""One MLflow trace per served answer: spans ``answer`` → ``retrieve`` (→ ``embed_query``) and
``generate``, with chunk ids/scores, prompt and bundle versions, tokens, latency and cost.

Never blocking the user: spans are built in memory on the request thread and MLflow's own
asynchronous exporter (``MLFLOW_ENABLE_ASYNC_TRACE_LOGGING``, on by default) writes them from a
bounded queue in the background. When the tracking store is down the exporter gives up on the
trace after its (shortened, see :func:`fail_fast_tracking_defaults`) retries, and when the queue
is full it discards new traces; both are logged by MLflow at WARNING level and counted here
(:class:`TraceExportWatch`), so ``/metrics`` shows ``llmops_traces_dropped_total`` rising while
answers keep succeeding. We chose *drop with a counter* over our own disk buffer: the answer log
(:mod:`llmops_dagster.serving.store`) keeps every answer anyway, so a lost trace loses span
detail, not the record of what was answered.
"""

from __future__ import annotations

import json
import logging
import os
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
from llmops_dagster.text.pii import redact_pii

log = logging.getLogger(__name__)

# MLflow's exporter logs these (mlflow 3.17: tracing/export/mlflow_v3.py, async_export_queue.py)
# when a trace is lost; a test pins them so an upgrade that rewords them fails loudly.
_EXPORT_LOGGERS = ("mlflow.tracing.export.mlflow_v3", "mlflow.tracing.export.async_export_queue")
_DROP_MESSAGES = ("Failed to send trace", "Trace export queue is full")

# Wall time of the query embedding in the current request (read back for the response timings).
_EMBED_MS: ContextVar[float | None] = ContextVar("embed_ms", default=None)


def fail_fast_tracking_defaults() -> None:
    """A server must not wait minutes on a dead tracking server: MLflow's HTTP client retries 7
    times with backoff by default. Defaults only; an exported value wins."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


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


class _SpanObserver:
    """Turns the pipeline's stages into child spans of the current span."""

    @contextmanager
    def stage(self, name: str, **inputs: Any) -> Iterator[dict[str, Any]]:
        import mlflow
        from mlflow.entities import SpanType

        span_type = {"retrieve": SpanType.RETRIEVER, "generate": SpanType.LLM}.get(
            name, SpanType.UNKNOWN
        )
        with mlflow.start_span(name, span_type=span_type) as span:
            span.set_inputs(inputs)
            out: dict[str, Any] = {}
            yield out
            if "hits" in out:
                hits = out["hits"]
                span.set_outputs(
                    [
                        {"chunk_id": h.chunk_id, "doc_id": h.doc_id, "score": float(h.score)}
                        for h in hits
                    ]
                )
                span.set_attributes(
                    {
                        "chunk_ids": [h.chunk_id for h in hits],
                        "scores": [float(h.score) for h in hits],
                    }
                )
            if "generations" in out:
                gens = out["generations"]
                span.set_outputs([g.text for g in gens])
                span.set_attributes(
                    {
                        "tokens_in": sum(g.prompt_tokens for g in gens),
                        "tokens_out": sum(g.completion_tokens for g in gens),
                        "finish_reasons": [str(g.finish_reason) for g in gens],
                    }
                )


class TracedEncoder:
    """Wraps the query embedder so each encode call is an ``embed_query`` span (inside the
    ``retrieve`` span: the retriever embeds the query as part of searching)."""

    def __init__(self, inner: Any, model_id: str) -> None:
        self.inner = inner
        self.model_id = model_id

    def encode(self, texts: Sequence[str]) -> Any:
        import mlflow
        from mlflow.entities import SpanType

        with mlflow.start_span("embed_query", span_type=SpanType.EMBEDDING) as span:
            span.set_inputs({"texts": list(texts)})
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
    ) -> TracedAnswer:
        import mlflow
        from mlflow.entities import SpanType

        with mlflow.start_span("answer", span_type=SpanType.CHAIN) as root:
            root.set_inputs({"question": question, "filters": dict(filters or {})})
            _EMBED_MS.set(None)
            started = time.perf_counter()
            result: Answer = pipeline.answer(
                question,
                filters=filters,
                observer=_SpanObserver(),
                principal=principal,
                gate=guard,
            )
            total_ms = (time.perf_counter() - started) * 1000
            # PII on the way out too: a chunk indexed before redaction was switched on, or a
            # model that makes an address up, must not show one to the caller.
            redaction = redact_pii(result.text.strip())
            redacted = {kind: n for kind, n in redaction.counts.items() if n}
            cost = cost_fn(result)
            top = max((c.score for c in result.retrieved), default=None)
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
                keys.RETRIEVED_DOC_IDS: json.dumps([c.doc_id for c in result.retrieved]),
                keys.TOTAL_MS: f"{total_ms:.3f}",
                keys.QUEUE_MS: f"{queue_ms:.3f}",
                keys.USER: principal.name,
                keys.GROUPS: json.dumps(principal.visible_groups),
                keys.INJECTION_FLAGS: json.dumps(list(guard.question_flags)),
                keys.CHUNK_INJECTION_FLAGS: json.dumps(guard.chunk_flags),
                keys.REFUSED: guard.refused or "",
                keys.REDACTED: json.dumps(redacted),
            }
            mlflow.update_current_trace(
                metadata=metadata,
                tags={keys.TAG_BUNDLE_VERSION: context.bundle_version or "base",
                      keys.TAG_SOURCE: "serve"},
                request_preview=question[:300],
                response_preview=redaction.text[:300],
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
            root.set_outputs({"answer": redaction.text, "cited_chunk_ids": result.cited_chunk_ids})
            trace_id = root.trace_id
        with self._lock:
            self.started += 1
        return TracedAnswer(
            trace_id=trace_id,
            answer=result,
            text=redaction.text,
            redacted=redacted,
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
