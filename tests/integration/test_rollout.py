"""Staged rollout in the real answering path (``build_service``: real Elasticsearch with the
sample corpus, MLflow registry and traces on SQLite): two extractive bundles (champion k=2,
challenger k=3 — the rollout is about routing, not about the model), 20 callers with their own
API keys.

- split, 10 %: a bounded burst (3 rounds × 20 callers): each caller always gets the same bundle,
  exactly the callers ``arm_for`` places below the share get the challenger, and every response
  and trace names the bundle that answered.
- shadow: the champion answers and is returned; the challenger answers the same question off
  the request path, traced (tag ``rollout=shadow``) and logged under its version, never returned.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from elasticsearch import Elasticsearch
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from llmops_dagster.config import Settings
from llmops_dagster.rag.bundle import (
    CHALLENGER,
    DEFAULT_BUNDLE_MODEL,
    BundleVersion,
    register_bundle,
    set_bundle_alias,
)
from llmops_dagster.serving import trace_keys as keys
from llmops_dagster.serving.app import create_app
from llmops_dagster.serving.auth import KeyStore, add_key
from llmops_dagster.serving.rollout import RolloutPlan, arm_for
from llmops_dagster.serving.testbed import index_sample_corpus, promote, register_test_bundles
from llmops_dagster.serving.wiring import build_service
from llmops_dagster.tracking.mlflow_store import ensure_mlflow
from llmops_dagster.tracking.runs import open_run
from tests.conftest import drop_indices
from tests.support.settings import isolated_settings
from tests.support.warehouse import copy_embedding_cache

pytestmark = pytest.mark.integration

QUESTION = "In which year was Northwind Drones founded?"
SHADOW_QUESTION = "Where is Northwind Drones based?"
CALLERS = [f"caller-{n:02d}" for n in range(20)]


@dataclasses.dataclass
class World:
    settings: Settings
    client: MlflowClient
    champion: BundleVersion
    challenger: BundleVersion
    key_file: Path
    keys: dict[str, str]


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    es_settings: Settings,
    es_client: Elasticsearch,
    sample_dir: Path,
    sample_embeddings: Path,
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("rollout")
    alias = f"rollout-{uuid.uuid4().hex[:8]}"
    previous_uri = mlflow.get_tracking_uri()
    settings = isolated_settings(
        tmp / "home",
        elasticsearch={"url": es_settings.elasticsearch.url, "index_alias": alias},
        models={"torch_threads": 1},
        serving={"bundle_poll_s": 3600.0},
    )
    try:
        copy_embedding_cache(sample_embeddings, settings)
        index_sample_corpus(settings, sample_dir)
        bundles = register_test_bundles(settings)
        client = MlflowClient(tracking_uri=settings.mlflow_uri, registry_uri=settings.mlflow_uri)
        champion = bundles["extractive"]
        promote(client, champion, "rollout test: the champion")
        store = ensure_mlflow(settings.mlflow_uri, settings.mlflow.experiment)
        wider = dataclasses.replace(champion.bundle, retrieval_k=3)
        with open_run(store, run_name="rag_evaluation", tags={}, ui_url="http://x") as run:
            challenger = register_bundle(client, wider, run=run)
        set_bundle_alias(client, DEFAULT_BUNDLE_MODEL, challenger.version, CHALLENGER,
                         evaluation_run_id=run.run_id, decision_summary="rollout test")  # fmt: skip
        key_file = tmp / "api-keys.json"
        api_keys = {name: add_key(key_file, name, [])[1] for name in CALLERS}
        yield World(settings, client, champion, challenger, key_file, api_keys)
    finally:
        mlflow.set_tracking_uri(previous_uri)
        drop_indices(es_client, alias)


def _serve(world: World, **serving: object) -> tuple[TestClient, object]:
    settings = world.settings.override(serving=serving)
    service = build_service(settings)
    return TestClient(create_app(service, KeyStore(world.key_file))), service


def _ask(http: TestClient, world: World, caller: str, question: str = QUESTION) -> dict:
    response = http.post(
        "/v1/answer",
        json={"question": question},
        headers={"Authorization": f"Bearer {world.keys[caller]}"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_a_ten_percent_split_is_sticky_per_caller_and_names_the_bundle(world: World) -> None:
    plan = RolloutPlan("split", 0.10)
    expected = {c: arm_for(plan, c, world.challenger.version) for c in CALLERS}
    versions = {"champion": world.champion.version, "challenger": world.challenger.version}
    http, service = _serve(world, rollout="split", challenger_share=0.10)
    with http:
        seen: dict[str, set[tuple[str, str]]] = {c: set() for c in CALLERS}
        last: dict[str, str] = {}
        for _ in range(3):
            for caller in CALLERS:
                body = _ask(http, world, caller)
                seen[caller].add((body["rollout"], body["bundle"]["version"]))
                last[caller] = body["trace_id"]
        service.tracer.flush()
    # Sticky: one bundle per caller over every round, the one the hash placed it in.
    assert seen == {c: {(expected[c], versions[expected[c]])} for c in CALLERS}
    challenged = [c for c in CALLERS if expected[c] == "challenger"]
    assert 0 < len(challenged) < len(CALLERS)
    assert service.arm_answers == {
        "challenger": 3 * len(challenged),
        "champion": 3 * (len(CALLERS) - len(challenged)),
    }
    # Each trace names the bundle and the arm that answered.
    for caller in (challenged[0], next(c for c in CALLERS if c not in challenged)):
        trace = world.client.get_trace(last[caller])
        assert trace.info.tags[keys.TAG_ROLLOUT] == expected[caller]
        assert trace.info.trace_metadata[keys.BUNDLE_VERSION] == versions[expected[caller]]
    service.close()


def test_a_shadow_answer_is_traced_and_logged_but_never_returned(world: World) -> None:
    http, service = _serve(world, rollout="shadow")
    with http:
        body = _ask(http, world, CALLERS[0], SHADOW_QUESTION)
        service.drain_shadows()
        service.tracer.flush()
    assert (body["rollout"], body["bundle"]["version"]) == ("champion", world.champion.version)
    assert service.shadow_results == {"answered": 1, "failed": 0}
    shadows = [
        row
        for row in service.store.answers_since(None)
        if row["bundle_version"] == world.challenger.version and row["question"] == SHADOW_QUESTION
    ]
    assert len(shadows) == 1 and shadows[0]["trace_id"] != body["trace_id"]
    trace = world.client.get_trace(shadows[0]["trace_id"])
    assert trace.info.tags[keys.TAG_ROLLOUT] == "shadow"
    assert trace.info.trace_metadata[keys.ROLLOUT] == "shadow"
    assert trace.info.trace_metadata[keys.BUNDLE_VERSION] == world.challenger.version
    champion_trace = world.client.get_trace(body["trace_id"])
    assert champion_trace.info.tags[keys.TAG_ROLLOUT] == "champion"
    service.close()
