"""Champion promotion, rollback and the registry watcher against a real MLflow SQLite store."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from llmops_dagster.config import Settings
from llmops_dagster.evaluate.gate import (
    TAG_GATE_FAILURES,
    TAG_PREVIOUS,
    TAG_PROMOTED_AT,
    GateConfig,
    RollbackError,
    current_alias_version,
    evaluate_gate,
    promote_champion,
    rollback_champion,
)
from llmops_dagster.evaluate.registry_watch import diff_snapshots, registry_snapshot
from llmops_dagster.tracking.store import ensure_mlflow

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


def test_gate_pass_promotes_and_records_previous_then_rollback(
    client: MlflowClient, tmp_settings: Settings
) -> None:
    v1 = register_version(client, tmp_settings)
    first = promote_champion(
        client, MODEL, v1, evaluate_gate(PASSING, CONFIG), evaluation_run_id="r1"
    )
    assert first.promoted and first.previous_version is None
    assert current_alias_version(client, MODEL, "champion") == v1
    assert client.get_model_version(MODEL, v1).tags[TAG_PREVIOUS] == ""

    v2 = register_version(client, tmp_settings)
    second = promote_champion(client, MODEL, v2, evaluate_gate(PASSING, CONFIG))
    assert second.promoted and second.previous_version == v1
    assert current_alias_version(client, MODEL, "champion") == v2
    tags = client.get_model_version(MODEL, v2).tags
    assert tags[TAG_PREVIOUS] == v1 and TAG_PROMOTED_AT in tags and tags["gate_passed"] == "true"
    assert client.get_model_version(MODEL, v1).tags["champion_replaced_by"] == v2

    again = promote_champion(client, MODEL, v2, evaluate_gate(PASSING, CONFIG))
    assert again.promoted and "already" in again.reason
    assert client.get_model_version(MODEL, v2).tags[TAG_PREVIOUS] == v1  # not overwritten

    back = rollback_champion(client, MODEL)
    assert back.version == v1 and back.previous_version == v2
    assert current_alias_version(client, MODEL, "champion") == v1
    assert client.get_model_version(MODEL, v1).tags["champion_rolled_back_from"] == v2
    with pytest.raises(RollbackError, match="nothing to roll back"):
        rollback_champion(client, MODEL)  # v1 was the first champion


def test_gate_fail_leaves_champion_and_lists_failures(
    client: MlflowClient, tmp_settings: Settings
) -> None:
    v1 = register_version(client, tmp_settings)
    promote_champion(client, MODEL, v1, evaluate_gate(PASSING, CONFIG))
    v2 = register_version(client, tmp_settings)
    gate = evaluate_gate(FAILING, CONFIG)
    result = promote_champion(client, MODEL, v2, gate)
    assert not result.promoted and result.previous_version == v1
    assert current_alias_version(client, MODEL, "champion") == v1
    (failure,) = result.failures
    assert failure.metric == "recall_at_5" and failure.shortfall == pytest.approx(0.2)
    assert "recall_at_5" in result.reason
    tags = client.get_model_version(MODEL, v2).tags
    assert tags["gate_passed"] == "false" and "recall_at_5" in tags[TAG_GATE_FAILURES]


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

    # the gate's own champion move is tracked, not re-evaluated
    promote_champion(client, MODEL, v1, evaluate_gate(PASSING, CONFIG))
    events, cursor = diff_snapshots(cursor, registry_snapshot(client, MODEL))
    assert events == [] and registry_snapshot(client, MODEL)["aliases"]["champion"] == v1
