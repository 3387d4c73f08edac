"""Sensors that request evaluations: a new adapter version or alias move (the MLflow registry
sensor), and a change of prompt, golden set or index behind the alias (the inputs sensor)."""

import hashlib

import dagster as dg

from jobs import evaluate_job
from llmops_dagster.resources import (
    CorpusResource,
    ElasticsearchResource,
    MlflowResource,
    ModelsResource,
)


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


@dg.sensor(
    job=evaluate_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Re-evaluates the champion's configuration when the prompt template, the golden "
    "set or the index behind the alias changes; the cursor holds the last fingerprint.",
)
def evaluation_inputs_sensor(
    context: dg.SensorEvaluationContext,
    corpus: CorpusResource,
    elasticsearch: ElasticsearchResource,
    mlflow: MlflowResource,
):
    from llmops_dagster.evaluate.golden import load_golden
    from llmops_dagster.evaluate.triggers import EvaluationInputs, rerun_config
    from llmops_dagster.rag.bundle import current_champion
    from llmops_dagster.rag.prompts import load_prompt
    from llmops_dagster.search.aliases import current_index

    inputs = EvaluationInputs(
        prompt_version=load_prompt().version,
        golden_digest=load_golden(corpus.golden_path).version,
        index_name=current_index(elasticsearch.get_client(), elasticsearch.alias),
    )
    previous = EvaluationInputs.from_cursor(context.cursor)
    changes = inputs.changes_since(previous)
    context.update_cursor(inputs.to_cursor())
    if previous is None:
        yield dg.SkipReason("first tick: recorded the prompt, golden set and index")
        return
    if not changes:
        yield dg.SkipReason("prompt, golden set and index unchanged")
        return
    champion = current_champion(mlflow.client())
    if champion is None:
        yield dg.SkipReason(f"{', '.join(changes)}; no champion bundle to re-evaluate yet")
        return
    context.log.info(f"re-evaluating {champion.uri}: {', '.join(changes)}")
    yield dg.RunRequest(
        run_key="inputs-" + hashlib.sha256(inputs.to_cursor().encode()).hexdigest()[:16],
        run_config={"ops": {"rag_evaluation": {"config": rerun_config(champion.bundle)}}},
        tags={"llmops/reevaluate": ", ".join(changes)[:200]},
    )
