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
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

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


def _page() -> str:
    return resources.files("llmops_dagster.serving").joinpath("static/index.html").read_text()


def create_app(service: AnswerService) -> FastAPI:
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

    @app.middleware("http")
    async def count_and_limit(request: Request, call_next: Any) -> Response:
        route = request.url.path if request.url.path in _ROUTES else "other"
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            response: Response = JSONResponse(
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
    def answer(body: AnswerRequest) -> dict[str, Any]:
        """Answer with the champion bundle; the response names the bundle and the trace."""
        try:
            served = service.answer(
                body.question, filters=body.filters, user=body.user or "anonymous"
            )
        except BadRequest as exc:
            raise HTTPException(422, str(exc)) from exc
        except Unavailable as exc:
            raise HTTPException(503, str(exc)) from exc
        return served.to_response()

    @app.post("/v1/feedback", response_model=FeedbackResponse, tags=["feedback"])
    def feedback(body: FeedbackRequest) -> dict[str, Any]:
        """Thumbs up/down and an optional correction; idempotent per (trace, user)."""
        try:
            record, change = service.feedback(
                body.trace_id,
                rating=body.rating,
                user=body.user or "anonymous",
                correction=body.correction,
                comment=body.comment,
            )
        except UnknownTrace as exc:
            raise HTTPException(404, unknown_trace_message(body.trace_id)) from exc
        return feedback_payload(record, change)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> JSONResponse:
        ok, report = service.health()
        return JSONResponse({"ok": ok, **report}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["operations"])
    def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    return app


_ROUTES = frozenset({"/v1/answer", "/v1/feedback", "/healthz", "/metrics", "/"})
