"""The MLflow registry sensor: evaluate exactly once per new model version or alias move."""

import dagster as dg

from llmops_dagster.resources import LlmopsSettingsResource, MlflowResource

EVALUATION_SELECTION = dg.AssetSelection.assets("rag_evaluation", "champion_model")

evaluate_job = dg.define_asset_job(
    name="evaluate_candidate",
    selection=EVALUATION_SELECTION,
    description="Evaluate one adapter version on the golden set; promote it if the gate passes.",
)


@dg.sensor(
    job=evaluate_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Polls the MLflow registry; the cursor holds the versions and aliases seen.",
)
def mlflow_registry_sensor(
    context: dg.SensorEvaluationContext, llmops: LlmopsSettingsResource, mlflow: MlflowResource
):
    from mlflow.tracking import MlflowClient

    from llmops_dagster.evaluate.registry_watch import diff_snapshots, registry_snapshot

    name = llmops.settings().lora_model_name
    client = MlflowClient(mlflow.store().tracking_uri)
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
