"""Jobs, schedules and sensors of the code location."""

import os

import dagster as dg

REINDEX_SELECTION = dg.AssetSelection.groups("ingest", "prepare", "index")

# Sources → documents → chunks → embeddings → index: what keeps the search index fresh.
reindex_job = dg.define_asset_job(
    name="reindex",
    selection=REINDEX_SELECTION,
    description="Load new/changed source data, re-chunk and embed only what changed, and "
    "upsert/delete exactly those chunks in the live index.",
)

full_rebuild_job = dg.define_asset_job(
    name="reindex_full_rebuild",
    selection=REINDEX_SELECTION,
    config={"ops": {"search_index": {"config": {"full_rebuild": True}}}},
    description="Like reindex, but writes a new versioned index and swaps the alias atomically.",
)

reindex_schedule = dg.ScheduleDefinition(
    name="reindex_incremental",
    job=reindex_job,
    cron_schedule=os.environ.get("LLMOPS_REINDEX_CRON", "0 * * * *"),
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Incremental reindex; cheap when nothing changed (nothing is re-embedded).",
)

full_rebuild_schedule = dg.ScheduleDefinition(
    name="reindex_weekly_full_rebuild",
    job=full_rebuild_job,
    cron_schedule=os.environ.get("LLMOPS_FULL_REBUILD_CRON", "0 3 * * 0"),
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Periodic zero-downtime rebuild (compacts deletes, applies mapping changes).",
)


def build_jobs() -> tuple[list, list, list]:
    from jobs.sensors import evaluate_job, mlflow_registry_sensor

    return (
        [reindex_job, full_rebuild_job, evaluate_job],
        [reindex_schedule, full_rebuild_schedule],
        [mlflow_registry_sensor],
    )
