"""What the serving tracer writes to a real MLflow store (SQLite here; the served stack with
MLflow's auth app is tests/integration/test_serve.py): PII-redacted text for public answers,
no text at all for restricted ones — decided by the asker's groups *and* by the audiences of the
passages retrieved — and failures recorded without their message.

The retriever and the generator are stand-ins (a list of passages, a canned completion):
what is under test is the tracer and the real pipeline's stages, not search or a model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from llmops_dagster.access import Principal
from llmops_dagster.models.base import Generation
from llmops_dagster.rag.pipeline import RagPipeline, RetrievalSettings
from llmops_dagster.rag.prompts import load_prompt
from llmops_dagster.search.retriever import Hit
from llmops_dagster.serving import trace_keys as keys
from llmops_dagster.serving.guards import AnswerGuard
from llmops_dagster.serving.tracing import AnswerTracer, TraceContext, TracedEncoder
from llmops_dagster.tracking.mlflow_store import ensure_mlflow
from tests.support.tracking import sqlite_store

pytestmark = pytest.mark.integration

SECRET = "Curlew-68500"  # in the hr passage and in what the model "says" about it
EMAIL = "jane.doe@northwind.example"  # PII in a public question and generation
CONTEXT = TraceContext("models:/b/1", "1", "prompts:/p/1", "", "alias", "idx-1", "emb")


class _Encoder:
    model_id = "emb"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.zeros((len(texts), 4), dtype=np.float32)


class _Retriever:
    """Returns its passages whoever asks (a broken filter, for the passage-audience case)."""

    def __init__(self, hits: list[Hit], fail: Exception | None = None) -> None:
        self.hits, self.fail = hits, fail
        self.embedder = TracedEncoder(_Encoder(), "emb")

    def search(self, query: str, *, mode: str = "", k: int = 2, **_: Any) -> list[Hit]:
        self.embedder.encode([query])
        if self.fail is not None:
            raise self.fail
        return self.hits[:k]


class _Generator:
    model_id = "fake-llm"

    def __init__(self, text: str) -> None:
        self.text = text

    def generate(self, prompts: Sequence[Any], **_: Any) -> list[Generation]:
        return [Generation(self.text, 50, 9, 0.01, "stop") for _ in prompts]


def _hit(chunk_id: str, doc_id: str, text: str, groups: list[str]) -> Hit:
    return Hit(chunk_id, doc_id, text, "T", 0.9, "hybrid_rrf", metadata={"allowed_groups": groups})


PUBLIC_HIT = _hit("c-pub", "fs:handbook/expenses.md", "Claims go to Ledgerly.", ["public"])
HR_HIT = _hit("c-hr", "fs:confidential/hr/salary-bands.md", f"Band P4: {SECRET}.", ["hr"])


@pytest.fixture(scope="module")
def tracer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnswerTracer]:
    home = tmp_path_factory.mktemp("trace-disclosure")
    uri = sqlite_store(home / "mlflow.db")
    ensure_mlflow(uri, "serving-test")  # artifacts beside the database
    previous = mlflow.get_tracking_uri()
    traced = AnswerTracer(uri, "serving-test")
    yield traced
    traced.close()
    mlflow.set_tracking_uri(previous)


def _answer(
    tracer: AnswerTracer,
    question: str,
    hits: list[Hit],
    principal: Principal,
    *,
    text: str = "Ledgerly.",
    filters: dict[str, Any] | None = None,
    fail: Exception | None = None,
) -> Any:
    pipeline = RagPipeline(
        _Retriever(hits, fail), _Generator(text), load_prompt(), RetrievalSettings(k=2)
    )
    traced = tracer.answer(
        pipeline,
        question,
        context=CONTEXT,
        filters=filters,
        principal=principal,
        guard=AnswerGuard(question, "flag", 0.0),
        cost_fn=lambda a: 0.0,
        queue_ms=0.0,
    )
    return traced


def _stored(tracer: AnswerTracer, trace_id: str) -> tuple[Any, str]:
    """The trace as the store holds it, and everything in it (and its artifact) as text."""
    tracer.flush()
    client = MlflowClient(mlflow.get_tracking_uri())
    trace = client.get_trace(trace_id)
    dumped = json.dumps([trace.to_dict(), [s.to_dict() for s in trace.data.spans]], default=str)
    return trace, dumped


def test_a_public_answer_keeps_its_redacted_text(tracer: AnswerTracer) -> None:
    question = f"How do I claim expenses? Reply to {EMAIL}"
    traced = _answer(tracer, question, [PUBLIC_HIT], Principal.public(), text=f"Ledgerly. {EMAIL}")
    trace, dumped = _stored(tracer, traced.trace_id)
    assert traced.audience == ["public"]
    assert EMAIL not in dumped  # the question and the raw generation, redacted before any span
    spans = {s.name: s for s in trace.data.spans}
    assert set(spans) == {"answer", "retrieve", "embed_query", "generate"}
    assert spans["answer"].inputs["question"] == "How do I claim expenses? Reply to [EMAIL]"
    assert spans["retrieve"].inputs["query"] == "How do I claim expenses? Reply to [EMAIL]"
    assert spans["generate"].outputs == ["Ledgerly. [EMAIL]"]
    assert spans["answer"].outputs["answer"] == "Ledgerly. [EMAIL]"
    assert spans["embed_query"].inputs == {"texts": 1, "chars": [len(question)]}
    assert spans["retrieve"].outputs[0]["doc_id"] == "fs:handbook/expenses.md"
    meta = trace.info.trace_metadata
    assert (meta[keys.AUDIENCE], meta[keys.RESTRICTED]) == ('["public"]', "false")
    assert trace.info.tags[keys.TAG_AUDIENCE] == "public"


@pytest.mark.parametrize(
    ("principal", "hits", "audience"),
    [
        # The asker's group alone restricts it, even from public passages.
        (Principal("hr-reader", frozenset({"hr"})), [PUBLIC_HIT], ["hr"]),
        # A public asker who got an hr passage (the filter failed): the passage restricts it.
        (Principal.public(), [PUBLIC_HIT, HR_HIT], ["hr"]),
    ],
)
def test_a_restricted_answer_leaves_no_text_in_the_trace(
    tracer: AnswerTracer, principal: Principal, hits: list[Hit], audience: list[str]
) -> None:
    question = f"What is band P4 ({SECRET})?"
    traced = _answer(
        tracer,
        question,
        hits,
        principal,
        text=f"It is {SECRET}.",
        filters={"doc_id": "fs:confidential/hr/salary-bands.md"},
    )
    assert traced.audience == audience
    assert SECRET in traced.text  # the asker gets the answer
    trace, dumped = _stored(tracer, traced.trace_id)
    for text in (SECRET, "Band P4", "salary-bands", "Ledgerly", "What is band"):
        assert text not in dumped, text
    mark = f"[withheld: audience {','.join(audience)}]"
    spans = {s.name: s for s in trace.data.spans}
    assert spans["answer"].inputs == {"question": mark, "filters": {"doc_id": mark}}
    assert spans["answer"].outputs["answer"] == mark
    assert spans["retrieve"].inputs["query"] == mark
    assert spans["generate"].outputs == [mark]
    # Ids, numbers and the audience stay: the lineage walk and the metrics need them.
    assert spans["retrieve"].attributes["chunk_ids"] == [h.chunk_id for h in hits]
    meta = trace.info.trace_metadata
    assert json.loads(meta[keys.RETRIEVED_CHUNK_IDS]) == [h.chunk_id for h in hits]
    assert json.loads(meta[keys.RETRIEVED_DOC_IDS]) == mark
    assert (json.loads(meta[keys.AUDIENCE]), meta[keys.RESTRICTED]) == (audience, "true")
    assert meta[keys.COMPLETION_TOKENS] == "9"
    assert (trace.info.request_preview, trace.info.response_preview) == (mark, mark)


def test_a_failed_answer_records_the_kind_of_failure_not_its_message(
    tracer: AnswerTracer,
) -> None:
    hr = Principal("hr-reader", frozenset({"hr"}))
    question = f"Band of {SECRET}?"
    with pytest.raises(RuntimeError):
        _answer(tracer, question, [], hr, fail=RuntimeError(f"query {question!r} failed"))
    tracer.flush()
    client = MlflowClient(mlflow.get_tracking_uri())
    (found,) = client.search_traces(
        locations=[tracer.experiment_id],
        filter_string="trace.status = 'ERROR'",
        include_spans=True,
    )
    dumped = json.dumps([found.to_dict()], default=str)
    assert SECRET not in dumped and "failed" not in dumped.replace("FAILED", "")
    root = next(s for s in found.data.spans if s.parent_id is None)
    assert root.status.description == "RuntimeError"
    assert root.inputs["question"] == "[withheld: audience hr]"


def test_restricted_feedback_reaches_mlflow_as_a_rating_only(
    tracer: AnswerTracer, tmp_path: Path
) -> None:
    from llmops_dagster.serving.answer_log import FeedbackRecord
    from llmops_dagster.serving.feedback_sync import AssessmentWriter

    hr = Principal("hr-reader", frozenset({"hr"}))
    restricted = _answer(tracer, "What is band P4?", [HR_HIT], hr, text="68,500.")
    public = _answer(tracer, "How to claim?", [PUBLIC_HIT], Principal.public())
    tracer.flush()
    writer = AssessmentWriter(delay_s=0.2)
    for traced in (restricted, public):
        record = FeedbackRecord(
            traced.trace_id, "ann", "down", f"It is {SECRET}.", f"see {SECRET}", "t", "t"
        )
        writer.submit(record, traced.audience)
    writer.drain(timeout_s=60)
    writer.close()
    assert (writer.written, writer.failed) == (2, 0)
    client = MlflowClient(mlflow.get_tracking_uri())
    hidden = {a.name: a for a in client.get_trace(restricted.trace_id).info.assessments}
    assert hidden["user_rating"].feedback.value is False and hidden["user_rating"].rationale is None
    assert hidden["expected_answer"].expectation.value == "[withheld: audience hr]"
    assert SECRET not in json.dumps(client.get_trace(restricted.trace_id).to_dict(), default=str)
    shown = {a.name: a for a in client.get_trace(public.trace_id).info.assessments}
    assert shown["user_rating"].rationale == f"see {SECRET}"  # a public answer keeps its text
    assert shown["expected_answer"].expectation.value == f"It is {SECRET}."
