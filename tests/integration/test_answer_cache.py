"""The answer cache in the real answering path: the FastAPI app over the service
``llmops-dagster serve`` builds (``build_service``: real Elasticsearch with the sample corpus
indexed by the real assets, MLflow registry and traces on SQLite, the extractive bundle as
champion: the cache is about reuse, not about the model), with API keys of different groups.

One app per module; tests run in file order because they share it (and its counters): hit →
other audiences → the champion moves → the alias's index moves.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest
from elasticsearch import Elasticsearch
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from llmops_dagster.config import Settings
from llmops_dagster.rag.bundle import BundleVersion, register_bundle
from llmops_dagster.search.aliases import current_index, point_alias
from llmops_dagster.serving import trace_keys as keys
from llmops_dagster.serving.app import create_app
from llmops_dagster.serving.auth import KeyStore, add_key
from llmops_dagster.serving.service import AnswerService
from llmops_dagster.serving.testbed import index_sample_corpus, promote, register_test_bundles
from llmops_dagster.serving.wiring import build_service
from llmops_dagster.tracking.mlflow_store import ensure_mlflow
from llmops_dagster.tracking.runs import open_run
from tests.conftest import drop_indices
from tests.support.settings import isolated_settings
from tests.support.warehouse import copy_embedding_cache

pytestmark = pytest.mark.integration

QUESTION = "In which year was Northwind Drones founded?"
SALARY_QUESTION = "What is the salary range of band P4?"
SALARY_DOC = "fs:confidential/hr/salary-bands.md"
KEY_GROUPS = {"ana": [], "bo": [], "hr-reader": ["hr"], "ops-bot": ["ops"]}


@dataclass
class Cached:
    http: TestClient
    service: AnswerService
    settings: Settings
    client: MlflowClient
    es: Elasticsearch
    alias: str
    keys: dict[str, str]
    other_champion: BundleVersion  # extractive too, k=3: the champion to move to

    def ask(self, question: str, key: str = "ana", **body: Any) -> dict[str, Any]:
        response = self.http.post(
            "/v1/answer",
            json={"question": question, **body},
            headers={"Authorization": f"Bearer {self.keys[key]}"},
        )
        assert response.status_code == 200, response.text
        return response.json()

    def metric(self, name: str) -> float:
        text = self.http.get(
            "/metrics", headers={"Authorization": f"Bearer {self.keys['ops-bot']}"}
        ).text
        match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
        assert match, f"{name} not in /metrics"
        return float(match.group(1))

    def counts(self) -> tuple[float, float, float, float]:
        """(hits, misses, entries, clears) as /metrics shows them."""
        return (
            self.metric("llmops_answer_cache_hits_total"),
            self.metric("llmops_answer_cache_misses_total"),
            self.metric("llmops_answer_cache_entries"),
            self.metric("llmops_answer_cache_clears_total"),
        )

    def trace(self, trace_id: str) -> Any:
        self.service.tracer.flush()
        return self.client.get_trace(trace_id)


@pytest.fixture(scope="module")
def cached(
    tmp_path_factory: pytest.TempPathFactory,
    es_settings: Settings,
    es_client: Elasticsearch,
    sample_dir: Path,
    sample_embeddings: Path,
) -> Iterator[Cached]:
    tmp = tmp_path_factory.mktemp("answer-cache")
    alias = f"cache-{uuid.uuid4().hex[:8]}"
    previous_uri = mlflow.get_tracking_uri()
    settings = isolated_settings(
        tmp / "home",
        elasticsearch={"url": es_settings.elasticsearch.url, "index_alias": alias},
        models={"torch_threads": 1},
        # The poll thread never fires: the test moves the champion and refreshes itself.
        serving={"bundle_poll_s": 3600.0, "answer_cache_entries": 16, "answer_cache_ttl_s": 600},
    )
    try:
        copy_embedding_cache(sample_embeddings, settings)
        index_sample_corpus(settings, sample_dir)
        bundles = register_test_bundles(settings)
        client = MlflowClient(tracking_uri=settings.mlflow_uri, registry_uri=settings.mlflow_uri)
        promote(client, bundles["extractive"], "answer-cache test: the extractive champion")
        store = ensure_mlflow(settings.mlflow_uri, settings.mlflow.experiment)
        wider = dataclasses.replace(bundles["extractive"].bundle, retrieval_k=3)
        with open_run(store, run_name="rag_evaluation", tags={}, ui_url="http://x") as run:
            other = register_bundle(client, wider, run=run)
        key_file = tmp / "api-keys.json"
        api_keys = {name: add_key(key_file, name, groups)[1] for name, groups in KEY_GROUPS.items()}
        service = build_service(settings)
        assert service.holder.current.uri == bundles["extractive"].uri
        with TestClient(create_app(service, KeyStore(key_file))) as http:
            yield Cached(http, service, settings, client, es_client, alias, api_keys, other)
    finally:
        mlflow.set_tracking_uri(previous_uri)
        es_client.indices.delete(index=f"{alias}-clone", ignore_unavailable=True)
        drop_indices(es_client, alias)


def test_the_same_question_from_the_same_audience_is_a_hit_and_still_traced(
    cached: Cached,
) -> None:
    first = cached.ask(QUESTION)
    assert first["cached"] is False
    assert cached.counts() == (0, 1, 1, 0)
    # Normalised: case, spacing and trailing punctuation differ; another user, same groups.
    again = cached.ask("  in which YEAR was northwind drones   founded ", key="bo")
    assert again["cached"] is True
    assert cached.counts() == (1, 1, 1, 0)
    assert again["answer"] == first["answer"]
    assert again["citations"] == first["citations"]
    assert again["principal"] == "bo"
    assert again["trace_id"] != first["trace_id"]  # its own trace
    assert again["tokens"] == {"prompt": 0, "completion": 0} and again["cost_usd"] == 0.0
    assert again["timings_ms"]["retrieve"] == 0.0 and again["timings_ms"]["generate"] == 0.0

    trace = cached.trace(again["trace_id"])
    assert trace.info.tags[keys.TAG_CACHE] == "hit"
    meta = trace.info.trace_metadata
    assert meta[keys.CACHE_HIT] == "true"
    assert meta[keys.CACHE_SOURCE_TRACE] == first["trace_id"]
    assert meta[keys.BUNDLE_VERSION] == cached.service.holder.current.number
    assert sorted(s.name for s in trace.data.spans) == ["answer", "answer_cache"]
    original = cached.trace(first["trace_id"])
    assert original.info.tags[keys.TAG_CACHE] == "miss"
    assert original.info.trace_metadata[keys.CACHE_HIT] == "false"

    rows = cached.service.store
    assert rows.answer(again["trace_id"])["cache_hit"] is True  # type: ignore[index]
    assert rows.answer(first["trace_id"])["cache_hit"] is False  # type: ignore[index]


def test_a_caller_with_other_groups_never_gets_the_cached_answer(cached: Cached) -> None:
    hits, misses, entries, _ = cached.counts()
    hr = cached.ask(QUESTION, key="hr-reader")  # cached for the public audience above
    assert hr["cached"] is False
    assert cached.counts()[:3] == (hits, misses + 1, entries + 1)

    # The other way round: an hr answer from the salary page, then a public caller asking the
    # very same question gets a fresh answer that shows nothing of it.
    insider = cached.ask(SALARY_QUESTION, key="hr-reader")
    assert insider["cached"] is False and insider["retrieved"][0]["doc_id"] == SALARY_DOC
    outsider = cached.ask(SALARY_QUESTION, key="ana")
    assert outsider["cached"] is False
    assert not any(c["doc_id"].startswith("fs:confidential/") for c in outsider["retrieved"])
    assert "68,500" not in outsider["answer"] and "Curlew" not in outsider["answer"]
    # Each audience now has its own entry, and each is a hit for its own audience only.
    assert cached.ask(SALARY_QUESTION, key="hr-reader")["answer"] == insider["answer"]
    assert cached.ask(SALARY_QUESTION, key="bo")["answer"] == outsider["answer"]
    assert cached.counts()[:3] == (hits + 2, misses + 3, entries + 3)
    assert cached.service.store.answer(insider["trace_id"])["audience"] == ["hr"]  # type: ignore[index]


def test_moving_the_champion_empties_the_cache(cached: Cached) -> None:
    _, misses, entries, clears = cached.counts()
    assert entries > 0 and clears == 0
    assert cached.ask(QUESTION)["cached"] is True  # still cached before the move
    promote(cached.client, cached.other_champion, "answer-cache test: the champion moves")
    assert cached.service.holder.refresh() is True  # what the poll thread does
    hits = cached.counts()[0]
    assert cached.counts() == (hits, misses, 0, 1)
    after = cached.ask(QUESTION)
    assert after["cached"] is False
    assert after["bundle"]["version"] == cached.other_champion.version
    assert cached.counts() == (hits, misses + 1, 1, 1)
    assert cached.ask(QUESTION)["cached"] is True  # and it caches again, for the new bundle


def test_moving_the_alias_to_another_index_empties_the_cache(cached: Cached) -> None:
    es, alias = cached.es, cached.alias
    old = current_index(es, alias)
    assert old is not None
    hits, misses, entries, clears = cached.counts()
    assert entries == 1 and clears == 1
    # Another physical index with the same documents (a clone), then the alias moves to it.
    es.indices.put_settings(index=old, settings={"index.blocks.write": True})
    es.indices.clone(index=old, target=f"{alias}-clone", wait_for_active_shards="1")
    es.indices.put_settings(index=old, settings={"index.blocks.write": False})
    point_alias(es, alias, f"{alias}-clone")
    moved = cached.ask(QUESTION)
    assert moved["cached"] is False
    assert cached.counts() == (hits, misses + 1, 1, 2)
    trace = cached.trace(moved["trace_id"])
    assert trace.info.trace_metadata[keys.INDEX_NAME] == f"{alias}-clone"
