"""``llmops-dagster serve`` as a real process: real Elasticsearch (the sample corpus indexed by
the real assets), a real ``mlflow server`` as the tracking store, the packaged SmolLM2 model.

One server per module (models load once); tests run in file order because they share it:
answers and traces → feedback → bad input → operations → the champion swap under load → the
web page in headless Chromium → the tracking store going down (last: it stops MLflow).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from elasticsearch import Elasticsearch
from mlflow import MlflowClient

from llmops_dagster.config import Settings
from llmops_dagster.rag.bundle import BundleVersion
from llmops_dagster.serving import trace_keys as keys
from llmops_dagster.serving.store import ServingStore
from llmops_dagster.serving.testbed import (
    index_sample_corpus,
    promote,
    register_test_bundles,
    serve_process,
    start_mlflow_server,
    stop_process,
)
from tests.conftest import drop_indices

pytestmark = pytest.mark.integration

QUESTION = "In which year was Northwind Drones founded?"


@dataclass
class Served:
    url: str
    settings: Settings
    client: MlflowClient
    llm: BundleVersion
    extractive: BundleVersion
    mlflow_proc: subprocess.Popen
    store: ServingStore

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=120, **kwargs)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=30)

    def metric(self, name: str) -> float:
        text = self.get("/metrics").text
        match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
        assert match, f"{name} not in /metrics"
        return float(match.group(1))


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
    es_settings: Settings,
    es_client: Elasticsearch,
    sample_dir: Path,
) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("serve")
    home = tmp / "home"
    home.mkdir()
    # A real MLflow tracking server: "the tracking store is down" is a real stop.
    mlflow_proc, tracking_uri = start_mlflow_server(tmp / "mlflow")
    alias = f"serve-{uuid.uuid4().hex[:8]}"
    try:
        settings = Settings().override(
            home=home,
            elasticsearch={"url": es_settings.elasticsearch.url, "index_alias": alias},
            warehouse={"duckdb_path": home / "warehouse.duckdb"},
            mlflow={"tracking_uri": tracking_uri},
            models={"cache_dir": Settings().models_cache_dir, "torch_threads": 1},
            serving={"bundle_poll_s": 0.5},
        )
        index_sample_corpus(settings, sample_dir)
        bundles = register_test_bundles(settings)
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        with serve_process(settings, tmp / "serve.log") as server:
            yield Served(
                url=server.url,
                settings=settings,
                client=client,
                llm=bundles["llm"],
                extractive=bundles["extractive"],
                mlflow_proc=mlflow_proc,
                store=ServingStore(settings.serving_store_path),
            )
    finally:
        stop_process(mlflow_proc)
        drop_indices(es_client, alias)


def _trace(served: Served, trace_id: str, timeout_s: float = 60) -> Any:
    """The trace once the server's background exporter has written it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            trace = served.client.get_trace(trace_id)
        except Exception:
            trace = None
        if trace is not None and len(trace.data.spans) == 4:
            return trace
        time.sleep(0.5)
    pytest.fail(f"trace {trace_id} never reached the tracking store")


def test_answer_is_traced_with_its_spans(served: Served) -> None:
    response = served.post("/v1/answer", json={"question": QUESTION})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["bundle"]["uri"] == served.llm.uri
    assert body["bundle"]["version"] == served.llm.version
    assert body["bundle"]["model_id"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert body["bundle"]["k"] == 2 and body["bundle"]["retrieval_mode"] == "hybrid_rrf"
    assert len(body["retrieved"]) == 2
    assert body["answer"]
    assert 0 < body["tokens"]["completion"] <= 24 and body["tokens"]["prompt"] > 100
    assert body["cost_usd"] == 0.0  # the local model has no per-token price
    timings = body["timings_ms"]
    assert timings["total"] >= timings["generate"] > 0
    assert timings["retrieve"] >= timings["embed_query"] > 0
    retrieved = {c["chunk_id"] for c in body["retrieved"]}
    assert {c["chunk_id"] for c in body["citations"]} <= retrieved

    trace = _trace(served, body["trace_id"])
    spans = {span.name: span for span in trace.data.spans}
    assert set(spans) == {"answer", "retrieve", "embed_query", "generate"}
    assert spans["embed_query"].parent_id == spans["retrieve"].span_id
    assert spans["retrieve"].parent_id == spans["answer"].span_id
    assert spans["generate"].parent_id == spans["answer"].span_id
    assert spans["retrieve"].attributes["chunk_ids"][:2] == [
        c["chunk_id"] for c in body["retrieved"]
    ]
    assert spans["generate"].attributes["tokens_out"] == body["tokens"]["completion"]
    assert spans["generate"].attributes["tokens_in"] == body["tokens"]["prompt"]
    meta = trace.info.trace_metadata
    assert meta[keys.BUNDLE_URI] == served.llm.uri
    assert meta[keys.BUNDLE_VERSION] == served.llm.version
    assert meta[keys.PROMPT_VERSION] == body["bundle"]["prompt_version"]
    assert meta[keys.PROMPT_URI] == served.llm.bundle.prompt_uri
    assert meta[keys.INDEX_NAME] == served.llm.bundle.index_name
    assert meta[keys.COMPLETION_TOKENS] == str(body["tokens"]["completion"])
    assert meta[keys.COST_USD] == "0.00000000"
    assert json.loads(meta[keys.RETRIEVED_CHUNK_IDS]) == [c["chunk_id"] for c in body["retrieved"]]
    assert trace.info.tags[keys.TAG_BUNDLE_VERSION] == served.llm.version
    experiment = served.client.get_experiment(trace.info.experiment_id)
    assert experiment.name == "llmops-serving"

    row = served.store.answer(body["trace_id"])
    assert row is not None and row["bundle_version"] == served.llm.version
    assert row["question"] == QUESTION and row["answer"] == body["answer"]


def test_lineage_walks_from_the_answer_to_chunks_documents_and_bundle(served: Served) -> None:
    from click.testing import CliRunner

    from llmops_dagster.cli import main
    from llmops_dagster.serving.testbed import serve_env

    (row,) = served.store.answers_since(None)[:1]
    _trace(served, row["trace_id"])
    env = serve_env(served.settings)
    result = CliRunner(env=env).invoke(main, ["lineage", row["trace_id"], "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["bundle_uri"] == served.llm.uri
    assert found["prompt_uri"] == served.llm.bundle.prompt_uri
    assert found["index_name"] == served.llm.bundle.index_name
    assert found["adapter_uri"] == ""  # the base model
    assert [c["chunk_id"] for c in found["chunks"]] == [r["chunk_id"] for r in row["retrieved"]]
    assert [c["doc_id"] for c in found["chunks"]] == [r["doc_id"] for r in row["retrieved"]]
    assert all(c["found"] and c["uri"] for c in found["chunks"])
    assert [c["cited"] for c in found["chunks"]] == [
        r["chunk_id"] in row["cited_chunk_ids"] for r in row["retrieved"]
    ]
    assert found["bundle_chain"]["start"] == served.llm.run_id
    assert found["problems"] == []

    missing = CliRunner(env=env).invoke(main, ["lineage", "tr-00000000000000000000000000000000"])
    assert missing.exit_code == 1 and "tr-00000000000000000000000000000000" in missing.output


def test_feedback_is_stored_idempotently_and_attached_to_the_trace(served: Served) -> None:
    trace_id = served.post("/v1/answer", json={"question": "Who founded Northwind?"}).json()[
        "trace_id"
    ]
    down = {"trace_id": trace_id, "rating": "down", "correction": "Two engineers.", "user": "ana"}
    first = served.post("/v1/feedback", json=down)
    assert first.status_code == 200, first.text
    assert first.json()["change"] == "created"
    again = served.post("/v1/feedback", json=down)
    assert again.json()["change"] == "unchanged"
    assert again.json()["created_at"] == first.json()["created_at"]
    up = {"trace_id": trace_id, "rating": "up", "user": "bo"}
    other_user = served.post("/v1/feedback", json=up)
    assert other_user.json()["change"] == "created"
    changed = served.post("/v1/feedback", json={**down, "comment": "still wrong"})
    assert changed.json()["change"] == "updated"
    rows = served.store.feedback_for(trace_id)
    assert [(r.user_id, r.rating, r.correction, r.comment) for r in rows] == [
        ("ana", "down", "Two engineers.", "still wrong"),
        ("bo", "up", None, None),
    ]

    unknown = served.post("/v1/feedback", json={**down, "trace_id": "tr-does-not-exist"})
    assert unknown.status_code == 404
    assert "no answer with trace id 'tr-does-not-exist'" in unknown.json()["detail"]

    # The assessments reach MLflow in the background: one rating per user, one expectation.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assessments = served.client.get_trace(trace_id).info.assessments
        names = sorted((a.name, a.source.source_id) for a in assessments)
        if names == [("expected_answer", "ana"), ("user_rating", "ana"), ("user_rating", "bo")]:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"assessments on {trace_id}: {names}")
    by_user = {a.source.source_id: a for a in assessments if a.name == "user_rating"}
    assert by_user["ana"].feedback.value is False and by_user["bo"].feedback.value is True
    assert by_user["ana"].rationale == "still wrong"


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        (b"{not json", 422, "JSON decode error"),
        (b'{"question": ""}', 422, "at least 1 character"),
        (b'{"question": "   "}', 422, "question is empty"),
        (json.dumps({"question": "x" * 2001}).encode(), 422, "the limit is 2000"),
        (json.dumps({"question": "x" * 70_000}).encode(), 413, "over 65536 bytes"),
        (b'{"question": "hi", "extra": 1}', 422, "Extra inputs are not permitted"),
        (b'{"question": "hi", "filters": {"text": "x"}}', 422, "cannot filter on text"),
        (b'{"question": "hi", "filters": {"source": 3}}', 422, "Input should be a valid"),
        (b"[1, 2]", 422, "Input should be a valid dictionary"),
        (b"\xff\xfe", 422, "JSON decode error"),
    ],
)
def test_bad_answer_requests_are_clear_4xx(
    served: Served, payload: bytes, status: int, message: str
) -> None:
    response = served.post(
        "/v1/answer", content=payload, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert message in response.text


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"trace_id": "tr-x", "rating": "meh"}, "Input should be 'up' or 'down'"),
        ({"rating": "up"}, "Field required"),
        ({"trace_id": "", "rating": "up"}, "at least 1 character"),
    ],
)
def test_bad_feedback_is_422(served: Served, payload: dict, message: str) -> None:
    response = served.post("/v1/feedback", json=payload)
    assert response.status_code == 422 and message in response.text


def test_health_metrics_and_openapi(served: Served) -> None:
    health = served.get("/healthz")
    assert health.status_code == 200
    report = health.json()
    assert report["ok"] is True
    assert report["elasticsearch"]["ok"] and report["tracking_store"]["ok"]
    assert report["bundle"]["version"] == served.llm.version

    answered = served.metric('llmops_requests_total{route="/v1/answer",status="200"}')
    assert answered >= 2
    assert served.metric('llmops_requests_total{route="/v1/answer",status="413"}') == 1
    assert served.metric("llmops_answer_latency_seconds_count") == answered
    assert served.metric('llmops_tokens_total{kind="completion"}') > 0
    assert served.metric("llmops_traces_started") == answered
    assert served.metric("llmops_traces_dropped") == 0

    schema = served.get("/openapi.json").json()
    assert {"/v1/answer", "/v1/feedback", "/healthz", "/metrics"} <= set(schema["paths"])
    assert "AnswerRequest" in schema["components"]["schemas"]


def test_champion_swap_between_requests(served: Served) -> None:
    """Two clients ask without pause while the champion moves: every request succeeds and each
    response is wholly one bundle (its version matches its generator)."""
    results: list[tuple[int, dict]] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while not stop.is_set():
                r = http.post(f"{served.url}/v1/answer", json={"question": QUESTION})
                results.append((r.status_code, r.json()))

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(3)
    swapped_to = served.extractive.version
    promote(served.client, served.extractive, "test: swap")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if sum(1 for _, b in results if b.get("bundle", {}).get("version") == swapped_to) >= 4:
            break
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=180)

    assert [s for s, _ in results if s != 200] == []
    versions = [b["bundle"]["version"] for _, b in results]
    assert set(versions) == {served.llm.version, served.extractive.version}
    for _, body in results:
        if body["bundle"]["version"] == served.extractive.version:
            assert body["bundle"]["model_id"] == "extractive:v1" and body["tokens"]["prompt"] == 0
        else:
            assert body["bundle"]["model_id"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert served.get("/healthz").json()["bundle"]["swaps"] == 1


def test_web_page_ask_answer_and_thumbs_down_with_a_correction(served: Served) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is missing: scripts/setup.sh installs it (apt-get install chromium)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.goto(served.url)
            page.fill("#question", QUESTION)
            page.click("#ask")
            page.wait_for_selector("#result:not([hidden])", timeout=120_000)
            meta = page.inner_text("#meta")
            trace_id = re.search(r"trace (tr-[0-9a-f]+)", meta).group(1)  # type: ignore[union-attr]
            served_row = served.store.answer(trace_id)
            assert served_row is not None
            # The page shows exactly what was served: the answer and its cited passages.
            assert page.inner_text("#answer") == served_row["answer"]
            shown = page.locator("#citations .citation").evaluate_all(
                "nodes => nodes.map(n => n.dataset.chunkId)"
            )
            assert shown == served_row["cited_chunk_ids"] and len(shown) >= 1
            assert f"bundle v{served.extractive.version}" in meta
            page.click("#thumbs-down")
            page.fill("#correction", "Northwind Drones was founded in 2019.")
            page.click("#send-feedback")
            page.wait_for_function(
                "document.getElementById('feedback-status').textContent.includes('saved')"
            )
        finally:
            browser.close()
    (row,) = served.store.feedback_for(trace_id)
    assert (row.user_id, row.rating, row.correction) == (
        "anonymous",
        "down",
        "Northwind Drones was founded in 2019.",
    )


def test_tracking_store_down_answers_still_succeed(served: Served) -> None:
    before = served.metric("llmops_traces_dropped")
    stop_process(served.mlflow_proc)
    for _ in range(2):
        response = served.post("/v1/answer", json={"question": QUESTION})
        assert response.status_code == 200, response.text
    deadline = time.monotonic() + 90
    while served.metric("llmops_traces_dropped") < before + 2 and time.monotonic() < deadline:
        time.sleep(1)
    assert served.metric("llmops_traces_dropped") == before + 2
    health = served.get("/healthz")
    assert health.status_code == 503
    assert health.json()["tracking_store"]["ok"] is False
    assert health.json()["bundle"]["version"] == served.extractive.version
