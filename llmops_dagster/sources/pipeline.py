"""dlt pipelines bound to the project's settings: DuckDB by default, any dlt destination by config.

One place decides where raw data lands, so that every source (and the Dagster assets that run
them) agrees on the file, the dataset (``raw``) and the pipeline state folder.
"""

from __future__ import annotations

import os
from typing import Any

import dlt
from dlt.common.destination import Destination
from dlt.common.pipeline import LoadInfo

from llmops_dagster.config import Settings
from llmops_dagster.sources.source_config import DestinationConfig


def _duckdb_destination(settings: Settings) -> Any:
    path = settings.effective_duckdb_path
    # DuckDB names its catalog after the file stem; a schema with the same name makes every
    # unqualified reference "Ambiguous reference to catalog or schema".
    if path.stem == settings.dlt_dataset:
        raise ValueError(
            f"LLMOPS_DLT_DATASET={settings.dlt_dataset!r} equals the DuckDB file's stem "
            f"({path.name}); rename one of them (LLMOPS_DUCKDB_PATH or LLMOPS_DLT_DATASET)."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return dlt.destinations.duckdb(credentials=str(path))


def make_destination(settings: Settings, destination: DestinationConfig | None = None) -> Any:
    """The dlt destination object: DuckDB at ``effective_duckdb_path`` unless configured."""
    destination = destination or DestinationConfig()
    if destination.name == "duckdb" and not destination.credentials_env:
        return _duckdb_destination(settings)
    kwargs: dict[str, Any] = {}
    if destination.credentials_env:
        value = os.environ.get(destination.credentials_env)
        if not value:
            raise ValueError(
                f"destination {destination.name!r}: environment variable "
                f"{destination.credentials_env} (destination.credentials_env) is not set"
            )
        kwargs["credentials"] = value
    # Without credentials_env, dlt reads DESTINATION__<NAME>__CREDENTIALS itself.
    return Destination.from_reference(destination.name, **kwargs)


def make_pipeline(
    settings: Settings,
    pipeline_name: str,
    destination: DestinationConfig | None = None,
) -> dlt.Pipeline:
    """A dlt pipeline writing dataset ``settings.dlt_dataset``; state under LLMOPS_HOME/dlt.

    Pipeline state (incremental cursors) lives both there and in the destination, so a fresh
    machine resumes from the destination rather than reloading everything.
    """
    pipelines_dir = settings.llmops_home / "dlt"
    pipelines_dir.mkdir(parents=True, exist_ok=True)
    return dlt.pipeline(
        pipeline_name=pipeline_name,
        destination=make_destination(settings, destination),
        dataset_name=settings.dlt_dataset,
        pipelines_dir=str(pipelines_dir),
    )


def loaded_row_counts(pipeline: dlt.Pipeline) -> dict[str, int]:
    """Rows per data table in the pipeline's last run (dlt's own tables left out).

    This is the honest incrementality signal: an unchanged source reports zero rows.
    """
    trace = pipeline.last_trace
    info = trace.last_normalize_info if trace else None
    counts = dict(info.row_counts) if info else {}
    return {table: n for table, n in counts.items() if not table.startswith("_dlt")}


def run_pipeline(pipeline: dlt.Pipeline, source: Any) -> tuple[LoadInfo, dict[str, int]]:
    """Run ``source`` and return dlt's load info plus rows loaded per table."""
    info = pipeline.run(source)
    return info, loaded_row_counts(pipeline)
