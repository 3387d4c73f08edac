"""Sensors that request evaluations: a new adapter version or alias move (the MLflow registry
sensor), a change of prompt, golden set or index behind the alias (the inputs sensor), and a
new training QA set (the training inputs sensor: fine-tune, then evaluate)."""

import hashlib

import dagster as dg

from jobs import evaluate_candidate_job, finetune_and_evaluate_job
from llmops_dagster.resources import (
    DatasetsResource,
    ElasticsearchResource,
    MlflowResource,
    ModelsResource,
)


@dg.sensor(
    job=evaluate_candidate_job,
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
    job=evaluate_candidate_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Re-evaluates the champion's configuration when the prompt template, the golden "
    "set, the index behind the alias or the generator settings change; the cursor holds the "
    "last fingerprint.",
)
def evaluation_inputs_sensor(
    context: dg.SensorEvaluationContext,
    datasets: DatasetsResource,
    elasticsearch: ElasticsearchResource,
    mlflow: MlflowResource,
    models: ModelsResource,
):
    from llmops_dagster.evaluate.golden import load_golden
    from llmops_dagster.evaluate.triggers import EvaluationInputs, generator_change, rerun_config
    from llmops_dagster.rag.bundle import current_champion
    from llmops_dagster.rag.prompts import load_prompt
    from llmops_dagster.search.aliases import current_index

    inputs = EvaluationInputs(
        prompt_version=load_prompt().version,
        golden_digest=load_golden(datasets.golden_path).version,
        index_name=current_index(elasticsearch.get_client(), elasticsearch.alias),
    )
    previous = EvaluationInputs.from_cursor(context.cursor)
    changes = inputs.changes_since(previous)
    context.update_cursor(inputs.to_cursor())
    champion = current_champion(mlflow.client())
    configured = models.generator_pin()
    # Compared with the champion itself, not with the last tick: a setting changed while the
    # sensor was off is still noticed, and the run key keeps it to one request per setting.
    generator = generator_change(champion.bundle, configured) if champion else None
    if previous is None and generator is None:
        yield dg.SkipReason("first tick: recorded the prompt, golden set and index")
        return
    if generator is not None:
        changes.append(generator)
    if not changes:
        yield dg.SkipReason("prompt, golden set, index and generator unchanged")
        return
    if champion is None:
        yield dg.SkipReason(f"{', '.join(changes)}; no champion bundle to re-evaluate yet")
        return
    context.log.info(f"re-evaluating {champion.uri}: {', '.join(changes)}")
    fingerprint = inputs.to_cursor() + configured.describe() + champion.version
    yield dg.RunRequest(
        run_key="inputs-" + hashlib.sha256(fingerprint.encode()).hexdigest()[:16],
        run_config={"ops": {"rag_evaluation": {"config": rerun_config(champion.bundle)}}},
        tags={"llmops/reevaluate": ", ".join(changes)[:200]},
    )


@dg.sensor(
    job=evaluate_candidate_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Re-evaluates a bundle whose promotion was refused as stale (the champion moved "
    "between its comparison and its promotion); one run per stale version.",
)
def stale_decision_sensor(context: dg.SensorEvaluationContext, mlflow: MlflowResource):
    from llmops_dagster.evaluate.triggers import rerun_config
    from llmops_dagster.rag.bundle import DEFAULT_BUNDLE_MODEL, TAG_OUTCOME, load_bundle

    client = mlflow.client()
    stale = client.search_model_versions(
        f"name = '{DEFAULT_BUNDLE_MODEL}' and tags.`{TAG_OUTCOME}` = 'stale'"
    )
    for version in sorted(stale, key=lambda v: int(v.version)):
        found = load_bundle(client, f"models:/{DEFAULT_BUNDLE_MODEL}/{version.version}")
        context.log.info(f"re-evaluating {found.uri}: its decision went stale")
        # The run key dedupes: each stale version is re-evaluated once.
        yield dg.RunRequest(
            run_key=f"stale-{DEFAULT_BUNDLE_MODEL}-{found.version}",
            run_config={"ops": {"rag_evaluation": {"config": rerun_config(found.bundle)}}},
            tags={"llmops/reevaluate": f"stale decision of {found.uri}"},
        )
    if not stale:
        yield dg.SkipReason("no stale decision")


@dg.sensor(
    job=finetune_and_evaluate_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Fine-tunes a new adapter and evaluates it when the training QA set changes "
    "(e.g. a reviewer accepted feedback into it); the cursor holds the file's digest.",
)
def training_inputs_sensor(
    context: dg.SensorEvaluationContext, datasets: DatasetsResource, mlflow: MlflowResource
):
    from pathlib import Path

    from llmops_dagster.evaluate.triggers import rerun_config
    from llmops_dagster.qa import qa_file_digest
    from llmops_dagster.rag.bundle import current_champion

    path = Path(datasets.train_qa_path)
    if not path.is_file():
        yield dg.SkipReason(f"no training QA set at {path} (LLMOPS_TRAIN_QA)")
        return
    digest = qa_file_digest(path)  # the training set's source_digest (qa.qa_digest)
    previous = context.cursor
    context.update_cursor(digest)
    if not previous:
        yield dg.SkipReason("first tick: recorded the training set digest")
        return
    if previous == digest:
        yield dg.SkipReason("training set unchanged")
        return
    change = f"new training set digest {digest[:12]} (was {previous[:12]})"
    # The new adapter is evaluated with the champion's own retrieval and answer settings, so
    # the comparison differs only in the adapter; without a champion the defaults apply.
    config: dict = {}
    champion = current_champion(mlflow.client())
    if champion is not None:
        config = {**rerun_config(champion.bundle), "generator": "llm"}
        config.pop("model_version", None)  # the newest adapter: the one this run trains
    context.log.info(f"fine-tuning and evaluating: {change}")
    yield dg.RunRequest(
        run_key=f"train-{digest[:16]}",
        run_config={"ops": {"rag_evaluation": {"config": config}}},
        tags={"llmops/retrain": change[:200]},
    )
