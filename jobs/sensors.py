"""The MLflow registry sensor: evaluate exactly once per new model version or alias move."""

import dagster as dg

from jobs import evaluate_job
from llmops_dagster.resources import MlflowResource, ModelsResource


@dg.sensor(
    job=evaluate_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Polls the MLflow registry; the cursor holds the versions and aliases seen.",
)
def mlflow_registry_sensor(
    context: dg.SensorEvaluationContext, models: ModelsResource, mlflow: MlflowResource
):
    from llmops_dagster.evaluate.registry_watch import diff_snapshots, registry_snapshot

    name = models.adapter_model_name
    client = mlflow.client()
    events, cursor = diff_snapshots(context.cursor, registry_snapshot(client, name))
    requested: set[str] = set()
    for event in events:
        # A new version and an alias already pointing at it are one thing to evaluate.
        if event.version in requested:
            continue
        requested.add(event.version)
        context.log.info(event.describe())
        yield dg.RunRequest(
            run_key=event.run_key,
            run_config={"ops": {"rag_evaluation": {"config": {"model_version": event.version}}}},
            tags={"llmops/registry_event": event.describe()[:200]},
        )
    context.update_cursor(cursor)
    if not requested:
        yield dg.SkipReason(f"no new version or alias move of {name}")
