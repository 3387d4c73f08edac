"""The registry sensor against a real MLflow store: one run request per change, never two."""

from __future__ import annotations

import dagster as dg
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from jobs.sensors import mlflow_registry_sensor
from llmops_dagster.config import Settings
from llmops_dagster.resources import build_resources
from llmops_dagster.tracking.mlflow_store import ensure_mlflow

pytestmark = pytest.mark.integration


def _register(settings: Settings, client: MlflowClient) -> str:
    store = ensure_mlflow(settings.mlflow_uri, settings.mlflow.experiment)
    mlflow.set_tracking_uri(store.tracking_uri)  # this test writes with the fluent API
    with mlflow.start_run(experiment_id=store.experiment_id) as run:
        mlflow.log_dict({"adapter": "weights would be here"}, "adapter/adapter_config.json")
    source = f"{run.info.artifact_uri}/adapter"
    version = client.create_model_version(
        settings.models.adapter_model_name, source, run.info.run_id
    )
    return str(version.version)


def _tick(settings: Settings, cursor: str | None) -> tuple[list[dg.RunRequest], str | None]:
    built = build_resources(settings, with_dlt=False)
    resources = {"models": built["models"], "mlflow": built["mlflow"]}
    with dg.build_sensor_context(cursor=cursor, resources=resources) as context:
        result = mlflow_registry_sensor(context)
        requests = [r for r in (result or []) if isinstance(r, dg.RunRequest)]
        return requests, context.cursor


def test_one_run_per_new_version_and_per_alias_move(tmp_settings: Settings) -> None:
    client = MlflowClient(tmp_settings.mlflow_uri)
    ensure_mlflow(tmp_settings.mlflow_uri, tmp_settings.mlflow.experiment)
    client.create_registered_model(tmp_settings.models.adapter_model_name)

    requests, cursor = _tick(tmp_settings, None)
    assert requests == []  # nothing registered yet

    v1 = _register(tmp_settings, client)
    requests, cursor = _tick(tmp_settings, cursor)
    assert [r.run_config["ops"]["rag_evaluation"]["config"]["model_version"] for r in requests] == [
        v1
    ]
    requests, cursor = _tick(tmp_settings, cursor)
    assert requests == []  # the same state again: nothing

    v2 = _register(tmp_settings, client)
    client.set_registered_model_alias(tmp_settings.models.adapter_model_name, "candidate", v1)
    requests, cursor = _tick(tmp_settings, cursor)
    versions = sorted(
        r.run_config["ops"]["rag_evaluation"]["config"]["model_version"] for r in requests
    )
    assert versions == sorted([v1, v2])  # one for the new version, one for the alias move
    assert len({r.run_key for r in requests}) == 2

    client.set_registered_model_alias(tmp_settings.models.adapter_model_name, "candidate", v2)
    requests, cursor = _tick(tmp_settings, cursor)
    assert [r.run_config["ops"]["rag_evaluation"]["config"]["model_version"] for r in requests] == [
        v2
    ]
    requests, _ = _tick(tmp_settings, cursor)
    assert requests == []
