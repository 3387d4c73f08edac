"""Champion promotion, rollback and the registry watcher against a real MLflow SQLite store."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from llmops_dagster.config import Settings
from llmops_dagster.evaluate.gate import (
    GateConfig,
)
from llmops_dagster.evaluate.registry_watch import diff_snapshots, registry_snapshot
from llmops_dagster.tracking.mlflow_store import ensure_mlflow

pytestmark = pytest.mark.integration

MODEL = "rag-generator"
CONFIG = GateConfig(minimums={"recall_at_5": 0.6, "token_f1": 0.2})
PASSING = {"recall_at_5": 0.8, "token_f1": 0.3}
FAILING = {"recall_at_5": 0.4, "token_f1": 0.3}


@pytest.fixture
def client(tmp_settings: Settings) -> MlflowClient:
    ensure_mlflow(tmp_settings.mlflow_uri, tmp_settings.mlflow.experiment)
    uri = tmp_settings.mlflow_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def register_version(client: MlflowClient, settings: Settings) -> str:
    """A model version whose source is a plain logged artifact folder (like a LoRA adapter)."""
    store = ensure_mlflow(settings.mlflow_uri, settings.mlflow.experiment)
    mlflow.set_tracking_uri(store.tracking_uri)  # this test writes with the fluent API
    with mlflow.start_run(experiment_id=store.experiment_id) as run:
        mlflow.log_text('{"r": 8}', "adapter/adapter_config.json")
    try:
        client.get_registered_model(MODEL)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(MODEL)
    mv = client.create_model_version(
        MODEL, source=f"{run.info.artifact_uri}/adapter", run_id=run.info.run_id
    )
    return str(mv.version)


def test_registry_watch_exactly_once(client: MlflowClient, tmp_settings: Settings) -> None:
    events, cursor = diff_snapshots(None, registry_snapshot(client, MODEL))
    assert events == []  # model not registered yet: empty, not an error

    v1 = register_version(client, tmp_settings)
    events, cursor = diff_snapshots(cursor, registry_snapshot(client, MODEL))
    assert [(e.kind, e.version) for e in events] == [("new_version", v1)]
    events, cursor = diff_snapshots(cursor, registry_snapshot(client, MODEL))
    assert events == []

    client.set_registered_model_alias(MODEL, "candidate", v1)
    events, cursor = diff_snapshots(cursor, registry_snapshot(client, MODEL))
    assert [(e.kind, e.alias, e.version) for e in events] == [("alias_moved", "candidate", v1)]
    assert diff_snapshots(cursor, registry_snapshot(client, MODEL))[0] == []

    # a champion move is tracked, not re-evaluated (promotion is the evaluation's own act)
    client.set_registered_model_alias(MODEL, "champion", v1)
    events, cursor = diff_snapshots(cursor, registry_snapshot(client, MODEL))
    assert events == [] and registry_snapshot(client, MODEL)["aliases"]["champion"] == v1
