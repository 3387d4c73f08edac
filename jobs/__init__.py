"""Jobs, schedules and sensors of the code location."""

from __future__ import annotations

import dagster as dg

# Everything from the sources to the embeddings: what a reindex needs to refresh.
refresh_job = dg.define_asset_job(
    name="refresh_corpus",
    selection=dg.AssetSelection.groups("ingest", "prepare"),
    description="Load new/changed source data, re-chunk and embed only what changed.",
)

refresh_schedule = dg.ScheduleDefinition(
    name="refresh_corpus_hourly",
    job=refresh_job,
    cron_schedule="0 * * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Hourly incremental refresh; cheap when nothing changed (nothing is re-embedded).",
)


def build_jobs() -> tuple[list, list, list]:
    return [refresh_job], [refresh_schedule], []
