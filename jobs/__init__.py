"""Jobs, schedules and sensors of the code location."""

import dagster as dg

#: Fine-tuning the embedding model and its shadow index: on request only (minutes of training
#: and a whole new index), never part of a reindex or of the whole graph.
EMBEDDING_FINETUNE_SELECTION = dg.AssetSelection.assets(
    "embedding_finetune", "shadow_index", "rag_evaluation", "champion_model"
)
SHADOW_SELECTION = dg.AssetSelection.assets("embedding_finetune", "shadow_index")
REINDEX_SELECTION = dg.AssetSelection.groups("ingest", "prepare", "index") - SHADOW_SELECTION
EVALUATION_SELECTION = dg.AssetSelection.assets("rag_evaluation", "champion_model")
FINETUNE_SELECTION = dg.AssetSelection.assets(
    "finetune_dataset", "lora_adapter", "rag_evaluation", "champion_model"
)
#: Daily-partitioned assets: a run materializes one day, so they have their own job and
#: schedule and stay out of the unpartitioned jobs below.
DAILY_SELECTION = dg.AssetSelection.assets("serving_judgments")
SERVING_SELECTION = dg.AssetSelection.groups("serve") - DAILY_SELECTION
#: Everything a fresh deployment builds in one run (the demo's run): the whole graph but the
#: daily partitions, the embedding fine-tuning and its shadow index.
WHOLE_GRAPH_SELECTION = dg.AssetSelection.all() - DAILY_SELECTION - SHADOW_SELECTION
SERVING_WATCH_CRON = "0 * * * *"

# Sources → documents → chunks → embeddings → index: what keeps the search index fresh.
reindex_job = dg.define_asset_job(
    name="reindex",
    selection=REINDEX_SELECTION,
    description="Load new/changed source data, re-chunk and embed only what changed, and "
    "upsert/delete exactly those chunks in the live index.",
)

reindex_full_rebuild_job = dg.define_asset_job(
    name="reindex_full_rebuild",
    selection=REINDEX_SELECTION,
    config={"ops": {"search_index": {"config": {"full_rebuild": True}}}},
    description="Like reindex, but writes a new versioned index and swaps the alias atomically.",
)

evaluate_candidate_job = dg.define_asset_job(
    name="evaluate_candidate",
    selection=EVALUATION_SELECTION,
    description="Evaluate one adapter version on the golden set; promote it if the gate passes.",
)

finetune_and_evaluate_job = dg.define_asset_job(
    name="finetune_and_evaluate",
    selection=FINETUNE_SELECTION,
    description="Rebuild the SFT dataset, train a LoRA adapter and evaluate it against the "
    "champion (requested when the training QA set changes, e.g. after accepted feedback).",
)

finetune_embedding_job = dg.define_asset_job(
    name="finetune_embedding",
    selection=EMBEDDING_FINETUNE_SELECTION,
    config={"ops": {"rag_evaluation": {"config": {"index": "shadow"}}}},
    description="Fine-tune the embedding model on the corpus, build its shadow index beside the "
    "live alias, evaluate the champion bundle on it against the champion on the live index, "
    "and promote bundle and alias together (or drop the refused shadow).",
)

serving_watch_job = dg.define_asset_job(
    name="serving_watch",
    selection=SERVING_SELECTION,
    description="Load new traces and feedback, recompute the serving metrics and their checks, "
    "and refresh the feedback candidates awaiting review.",
)


judge_served_answers_job = dg.define_asset_job(
    name="judge_served_answers",
    selection=DAILY_SELECTION,
    description="Judge a sample of one day's served answers per bundle version (online "
    "evaluation): scores as MLflow assessments and a table, low scores to review.",
)

whole_graph_job = dg.define_asset_job(
    name="whole_graph",
    selection=WHOLE_GRAPH_SELECTION,
    description="Every asset but the daily-partitioned ones and the embedding fine-tuning, in "
    "dependency order (the demo).",
)


def build_schedules(
    *, reindex_cron: str = "0 * * * *", full_rebuild_cron: str = "0 3 * * 0"
) -> list[dg.ScheduleDefinition]:
    """The reindex schedules; cron strings come from ``build_definitions`` (settings)."""
    return [
        dg.ScheduleDefinition(
            name="reindex_incremental",
            job=reindex_job,
            cron_schedule=reindex_cron,
            default_status=dg.DefaultScheduleStatus.STOPPED,
            description="Incremental reindex; cheap when nothing changed (nothing re-embedded).",
        ),
        dg.ScheduleDefinition(
            name="reindex_weekly_full_rebuild",
            job=reindex_full_rebuild_job,
            cron_schedule=full_rebuild_cron,
            default_status=dg.DefaultScheduleStatus.STOPPED,
            description="Periodic zero-downtime rebuild (compacts deletes, applies mapping "
            "changes).",
        ),
        dg.ScheduleDefinition(
            name="serving_watch_hourly",
            job=serving_watch_job,
            cron_schedule=SERVING_WATCH_CRON,
            default_status=dg.DefaultScheduleStatus.STOPPED,
            description="Serving metrics and feedback candidates; cheap when nothing was served.",
        ),
        dg.build_schedule_from_partitioned_job(
            judge_served_answers_job,
            name="judge_served_answers_daily",
            hour_of_day=1,
            default_status=dg.DefaultScheduleStatus.STOPPED,
            description="Judges yesterday's served answers once the day is complete.",
        ),
    ]


def build_jobs(
    *, reindex_cron: str = "0 * * * *", full_rebuild_cron: str = "0 3 * * 0"
) -> tuple[list, list, list]:
    from jobs.sensors import (
        evaluation_inputs_sensor,
        mlflow_registry_sensor,
        stale_decision_sensor,
        training_inputs_sensor,
    )

    return (
        [
            reindex_job,
            reindex_full_rebuild_job,
            evaluate_candidate_job,
            finetune_and_evaluate_job,
            finetune_embedding_job,
            serving_watch_job,
            judge_served_answers_job,
            whole_graph_job,
        ],
        build_schedules(reindex_cron=reindex_cron, full_rebuild_cron=full_rebuild_cron),
        [
            mlflow_registry_sensor,
            evaluation_inputs_sensor,
            stale_decision_sensor,
            training_inputs_sensor,
        ],
    )
