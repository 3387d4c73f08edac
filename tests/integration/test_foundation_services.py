"""The foundation against real services: the ES node, the MLflow store, the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

import numpy as np
import pytest
from elasticsearch import Elasticsearch, helpers

from llmops_dagster.config import ElasticsearchSettings, MlflowSettings, Settings
from llmops_dagster.search.client import ElasticsearchUnavailable, check_cluster, make_client
from llmops_dagster.tracking.mlflow_store import MlflowUnavailable, ensure_mlflow

pytestmark = pytest.mark.integration


def test_hybrid_index_basics_on_the_real_node(
    es_client: Elasticsearch, es_settings: Settings
) -> None:
    health = check_cluster(es_client, es_settings.cluster_spec())
    assert health.status in {"green", "yellow"}
    assert health.version and health.version.startswith("9.")

    prefix = f"found-{uuid.uuid4().hex[:8]}"
    old, new, alias = f"{prefix}-v1", f"{prefix}-v2", f"{prefix}-alias"
    mapping = {
        "properties": {
            "text": {"type": "text"},
            "embedding": {
                "type": "dense_vector",
                "dims": 4,
                "similarity": "cosine",
                "index_options": {"type": "int8_hnsw"},
            },
        }
    }
    rng = np.random.default_rng(7)
    docs = [
        ("a", "the drone battery swap procedure", [1.0, 0.0, 0.0, 0.1]),
        ("b", "expense reports are due monthly", [0.0, 1.0, 0.0, 0.1]),
        ("c", "on-call rotation starts on monday", [0.0, 0.0, 1.0, 0.1]),
    ]
    try:
        for index in (old, new):
            es_client.indices.create(
                index=index, mappings=mapping, settings={"number_of_replicas": 0}
            )
            ok, errors = helpers.bulk(
                es_client,
                ({"_index": index, "_id": i, "text": t, "embedding": v} for i, t, v in docs),
                refresh=True,
            )
            assert ok == 3 and not errors
        got = es_client.indices.get_mapping(index=new)[new]["mappings"]["properties"]
        assert got["embedding"]["index_options"]["type"] == "int8_hnsw"

        bm25 = es_client.search(index=new, query={"match": {"text": "battery"}})
        assert [h["_id"] for h in bm25["hits"]["hits"]] == ["a"]

        query_vector = (np.array([0.0, 0.9, 0.1, 0.1]) + rng.normal(0, 0.01, 4)).tolist()
        knn = es_client.search(
            index=new,
            knn={"field": "embedding", "query_vector": query_vector, "k": 1, "num_candidates": 10},
        )
        assert knn["hits"]["hits"][0]["_id"] == "b"

        es_client.indices.update_aliases(actions=[{"add": {"index": old, "alias": alias}}])
        # The swap: one call, remove + add, so readers never see zero or two indices.
        es_client.indices.update_aliases(
            actions=[
                {"remove": {"index": old, "alias": alias}},
                {"add": {"index": new, "alias": alias}},
            ]
        )
        assert list(es_client.indices.get_alias(name=alias)) == [new]
        assert es_client.count(index=alias)["count"] == 3
    finally:
        es_client.indices.delete(index=f"{prefix}-*", ignore_unavailable=True)


def test_bad_elasticsearch_url_names_the_setting() -> None:
    settings = Settings(elasticsearch=ElasticsearchSettings(ELASTICSEARCH_URL="http://127.0.0.1:9"))
    with pytest.raises(
        ElasticsearchUnavailable, match=re.escape("ELASTICSEARCH_URL=http://127.0.0.1:9")
    ):
        check_cluster(
            make_client(settings.cluster_spec(), request_timeout=2), settings.cluster_spec()
        )


def test_cli_status_reports_bad_url_and_exits_nonzero(tmp_path) -> None:
    env = {
        **os.environ,
        "ELASTICSEARCH_URL": "http://127.0.0.1:9",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "llmops_dagster.cli", "services", "status", "--json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    status = json.loads(proc.stdout)
    assert status["elasticsearch"]["healthy"] is False
    assert "ELASTICSEARCH_URL=http://127.0.0.1:9" in status["elasticsearch"]["error"]
    assert status["mlflow"]["healthy"] is True


def test_cli_status_against_the_real_node(es_settings: Settings, tmp_path) -> None:
    env = {
        **os.environ,
        "ELASTICSEARCH_URL": es_settings.es_url,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "llmops_dagster.cli", "services", "status", "--json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = json.loads(proc.stdout)
    assert status["elasticsearch"]["healthy"] is True
    assert status["elasticsearch"]["version"].startswith("9.")


def test_mlflow_sqlite_store_keeps_runs_and_artifacts(tmp_settings: Settings) -> None:
    import mlflow

    store = ensure_mlflow(tmp_settings.mlflow_uri, tmp_settings.mlflow.experiment)
    assert store.tracking_uri.startswith("sqlite:///")
    artifacts = tmp_settings.home / "mlflow" / "artifacts"
    assert store.artifact_location == artifacts.as_uri()
    mlflow.set_tracking_uri(store.tracking_uri)  # this test writes with the fluent API
    with mlflow.start_run(experiment_id=store.experiment_id) as run:
        mlflow.log_param("chunk_size", 200)
        mlflow.log_metric("ndcg_at_10", 0.71)
        mlflow.log_dict({"hello": "world"}, "probe.json")
    fetched = mlflow.get_run(run.info.run_id)
    assert fetched.data.params["chunk_size"] == "200"
    assert fetched.data.metrics["ndcg_at_10"] == pytest.approx(0.71)
    assert list(artifacts.rglob("probe.json")), "artifact must land beside the SQLite store"
    # Idempotent: a second call finds the same experiment.
    assert (
        ensure_mlflow(tmp_settings.mlflow_uri, tmp_settings.mlflow.experiment).experiment_id
        == store.experiment_id
    )


def test_unreachable_mlflow_server_names_the_setting() -> None:
    settings = Settings(mlflow=MlflowSettings(MLFLOW_TRACKING_URI="http://127.0.0.1:9"))
    with pytest.raises(
        MlflowUnavailable, match=re.escape("MLFLOW_TRACKING_URI=http://127.0.0.1:9")
    ):
        ensure_mlflow(settings.mlflow_uri, settings.mlflow.experiment)
