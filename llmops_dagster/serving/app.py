"""The HTTP layer: FastAPI routes over :class:`~llmops_dagster.serving.service.AnswerService`.

FastAPI because the request/response models are pydantic (as the configuration is), which gives
validation with clear 4xx errors and the OpenAPI schema (``/openapi.json``, ``/docs``) for free;
uvicorn runs it. Route handlers are plain ``def``: answering is CPU-bound model work, so it runs
in the server's thread pool and the event loop stays free for health checks and metrics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from llmops_dagster.access import Principal
from llmops_dagster.guardrails.ratelimit import RateLimiter, retry_after_header
from llmops_dagster.serving.auth import OPERATOR_GROUP, KeyStore, presented_key
from llmops_dagster.serving.guards import Busy
from llmops_dagster.serving.service import (
    AnswerService,
    BadRequest,
    Unavailable,
    UnknownTrace,
    feedback_payload,
    unknown_trace_message,
)

MAX_BODY_BYTES = 64 * 1024
FilterValue = str | list[str]


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=20_000, examples=["Who founded Northwind?"])
    filters: dict[str, FilterValue] | None = Field(
        default=None,
        description='Keyword field → value(s), e.g. {"source": "fs"}; ANDed.',
    )
    user: str | None = Field(default=None, max_length=200)


class Citation(BaseModel):
    chunk_id: str
    doc_id: str
    title: str
    score: float
    text: str


class RetrievedChunk(BaseModel):
    chunk_id: str
    doc_id: str
    title: str
    score: float


class BundleInfo(BaseModel):
    uri: str | None = Field(description="models:/llmops-rag-bundle/<v>; null = base model")
    version: str | None
    prompt_version: str
    model_id: str
    retrieval_mode: str
    k: int


class Timings(BaseModel):
    queue: float
    embed_query: float | None
    retrieve: float
    prompt: float
    generate: float
    total: float


class Tokens(BaseModel):
    prompt: int
    completion: int


class Guardrails(BaseModel):
    question_flags: list[str] = Field(description="Prompt-injection rules the question tripped")
    chunk_flags: dict[str, list[str]] = Field(description="Retrieved chunk id → rules tripped")
    refused: Literal["prompt_injection", "nothing_relevant"] | None
    redacted: dict[str, int] = Field(description="PII kind → count removed from the answer")


class AnswerResponse(BaseModel):
    trace_id: str
    answer: str
    citations: list[Citation]
    citations_inferred: bool
    retrieved: list[RetrievedChunk]
    bundle: BundleInfo
    timings_ms: Timings
    tokens: Tokens
    cost_usd: float | None = Field(description="null: a remote model missing from the prices")
    principal: str = Field(description="Who asked: the API key's name, or anonymous")
    guardrails: Guardrails
    cached: bool = Field(
        description="Replayed from the answer cache (same bundle, index, caller groups, filters "
        "and normalised question): nothing retrieved or generated, tokens and cost 0"
    )
    rollout: Literal["champion", "challenger"] = Field(
        description="Which alias's bundle answered: the champion, or the challenger for the "
        "share of callers a staged rollout sends to it (LLMOPS_SERVING_ROLLOUT=split)"
    )


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trace_id: str = Field(min_length=1, max_length=200)
    rating: Literal["up", "down"]
    correction: str | None = Field(default=None, max_length=5000)
    comment: str | None = Field(default=None, max_length=2000)
    user: str | None = Field(default=None, max_length=200)


class FeedbackResponse(BaseModel):
    trace_id: str
    user_id: str
    rating: Literal["up", "down"]
    correction: str | None
    comment: str | None
    created_at: str
    updated_at: str
    change: Literal["created", "updated", "unchanged"]


def authenticated(request: Request) -> Principal:
    """The caller: the API key's principal (401 without a valid key when keys are on)."""
    keys: KeyStore = request.app.state.keys
    if not keys.enabled:
        return Principal.public()
    record = keys.authenticate(presented_key(request.headers))
    if record is None:
        raise HTTPException(
            401,
            "missing or invalid API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return record.principal()


Authenticated = Annotated[Principal, Depends(authenticated)]


def caller(request: Request, principal: Authenticated) -> Principal:
    """The caller, within their rate limit (429 + Retry-After beyond it)."""
    limiter: RateLimiter | None = request.app.state.limiter
    if limiter is not None:
        # Per key; without keys per client address (the anonymous share one name).
        keyed = request.app.state.keys.enabled
        who = principal.name if keyed else (request.client.host if request.client else "?")
        wait = limiter.acquire(who)
        if wait > 0:
            request.app.state.metrics.rate_limited.inc()
            raise HTTPException(
                429,
                f"rate limit: {limiter.burst} requests at once, {limiter.rate * 60:g} per minute;"
                " retry later",
                headers={"Retry-After": retry_after_header(wait)},
            )
    return principal


Caller = Annotated[Principal, Depends(caller)]


def operator(request: Request, principal: Authenticated) -> Principal:
    """Operational endpoints need the operator group once keys are on (403 otherwise)."""
    if request.app.state.keys.enabled and OPERATOR_GROUP not in principal.groups:
        raise HTTPException(403, f"/metrics needs a key in the {OPERATOR_GROUP!r} group")
    return principal


def is_operator(request: Request) -> bool:
    """A valid key in the operator group (never an error: liveness probes send no key)."""
    keys: KeyStore = request.app.state.keys
    if not keys.enabled:
        return False  # no authentication at all: nobody is known to be an operator
    record = keys.authenticate(presented_key(request.headers))
    return record is not None and OPERATOR_GROUP in record.groups


def _page() -> str:
    return resources.files("llmops_dagster.serving").joinpath("static/index.html").read_text()


def create_app(
    service: AnswerService,
    keys: KeyStore | None = None,
    limiter: RateLimiter | None = None,
) -> FastAPI:
    """The app; ``keys`` = API-key authentication (None or no file: off, callers are public),
    ``limiter`` = per-caller token bucket on the answer and feedback routes."""
    keys = keys or KeyStore(None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(
        title="llmops-dagster",
        summary="Answers from the champion RAG bundle, traced in MLflow, with feedback.",
        version="1",
        lifespan=lifespan,
    )
    metrics = service.metrics
    page = _page()
    app.state.service = service
    app.state.keys = keys
    app.state.limiter = limiter
    app.state.metrics = metrics

    @app.middleware("http")
    async def count_and_limit(request: Request, call_next: Any) -> Response:
        route = request.url.path if request.url.path in _ROUTES else "other"
        length = request.headers.get("content-length")
        response: Response
        if request.method == "POST" and length is None:
            # Without a length the body could be unbounded (chunked): refuse before reading.
            response = JSONResponse({"detail": "Content-Length required"}, status_code=411)
        elif length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            response = JSONResponse(
                {"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413
            )
        else:
            try:
                response = await call_next(request)
            except Exception:  # an unexpected failure is a counted 500, never a dropped socket
                response = JSONResponse({"detail": "internal error"}, status_code=500)
        metrics.requests.labels(route, str(response.status_code)).inc()
        return response

    @app.post("/v1/answer", response_model=AnswerResponse, tags=["answers"])
    def answer(body: AnswerRequest, principal: Caller) -> dict[str, Any]:
        """Answer with the champion bundle from the documents the caller may read; the
        response names the bundle and the trace."""
        if not keys.enabled and body.user:
            principal = Principal(body.user, frozenset())  # a label only: still public access
        try:
            served = service.answer(body.question, filters=body.filters, principal=principal)
        except BadRequest as exc:
            raise HTTPException(422, str(exc)) from exc
        except Busy as exc:
            raise HTTPException(
                503, str(exc), headers={"Retry-After": retry_after_header(exc.retry_after_s)}
            ) from exc
        except Unavailable as exc:
            raise HTTPException(503, str(exc)) from exc
        return served.to_response()

    @app.post("/v1/feedback", response_model=FeedbackResponse, tags=["feedback"])
    def feedback(body: FeedbackRequest, principal: Caller) -> dict[str, Any]:
        """Thumbs up/down and an optional correction; idempotent per (trace, user). With API
        keys the user is the key's name. An answer the caller may not read is unknown (404)."""
        user = principal.name if keys.enabled else (body.user or "anonymous")
        try:
            record, change = service.feedback(
                body.trace_id,
                rating=body.rating,
                user=user,
                correction=body.correction,
                comment=body.comment,
                principal=principal,
            )
        except UnknownTrace as exc:
            raise HTTPException(404, unknown_trace_message(body.trace_id)) from exc
        return feedback_payload(record, change)

    @app.get("/healthz", tags=["operations"])
    def healthz(request: Request) -> JSONResponse:
        """Up or down (200 / 503) for anyone, e.g. a load balancer's probe; the report per
        dependency (no exception text) only for a key in the operator group."""
        ok, report = service.health()  # cached for a moment: probes do not reach the stores
        body = {"ok": ok, **report} if is_operator(request) else {"ok": ok}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["operations"], dependencies=[Depends(operator)])
    def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    return app


_ROUTES = frozenset({"/v1/answer", "/v1/feedback", "/healthz", "/metrics", "/"})
