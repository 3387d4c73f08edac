"""dlt pipelines bound to one warehouse target: DuckDB by default, any dlt destination by config.

One place decides where raw data lands, so that every source (and the Dagster assets that run
them) agrees on the file, the dataset (``raw``) and the pipeline state folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dlt
from dlt.common.destination import Destination
from dlt.common.pipeline import LoadInfo

from llmops_dagster.sources.source_config import DestinationConfig


@dataclass(frozen=True)
class WarehouseTarget:
    """Where raw data lands: the DuckDB file, the dataset (schema) and dlt's state folder."""

    duckdb_path: Path
    dataset: str = "raw"
    pipelines_dir: Path = Path(".llmops/dlt")


def _duckdb_destination(target: WarehouseTarget) -> Any:
    path = target.duckdb_path
    # DuckDB names its catalog after the file stem; a schema with the same name makes every
    # unqualified reference "Ambiguous reference to catalog or schema".
    if path.stem == target.dataset:
        raise ValueError(
            f"LLMOPS_DLT_DATASET={target.dataset!r} equals the DuckDB file's stem "
            f"({path.name}); rename one of them (LLMOPS_DUCKDB_PATH or LLMOPS_DLT_DATASET)."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return dlt.destinations.duckdb(credentials=str(path))


def make_destination(target: WarehouseTarget, destination: DestinationConfig | None = None) -> Any:
    """The dlt destination object: DuckDB at ``target.duckdb_path`` unless configured."""
    destination = destination or DestinationConfig()
    if destination.name == "duckdb" and not destination.credentials_env:
        return _duckdb_destination(target)
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
    target: WarehouseTarget,
    pipeline_name: str,
    destination: DestinationConfig | None = None,
) -> dlt.Pipeline:
    """A dlt pipeline writing dataset ``target.dataset``; state under ``target.pipelines_dir``.

    Pipeline state (incremental cursors) lives both there and in the destination, so a fresh
    machine resumes from the destination rather than reloading everything.
    """
    pipelines_dir = target.pipelines_dir
    pipelines_dir.mkdir(parents=True, exist_ok=True)
    return dlt.pipeline(
        pipeline_name=pipeline_name,
        destination=make_destination(target, destination),
        dataset_name=target.dataset,
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
