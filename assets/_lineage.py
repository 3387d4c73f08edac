"""Dagster side of lineage: each materialization logs an MLflow run linked to its upstreams."""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from llmops_dagster.resources import MlflowResource
from llmops_dagster.tracking.lineage import DatasetRef, log_asset_run

MLFLOW_RUN_ID = "mlflow_run_id"


def upstream_mlflow_runs(context: dg.AssetExecutionContext) -> dict[str, str]:
    """MLflow run ids recorded in the latest materialization of each upstream asset."""
    found: dict[str, str] = {}
    for key in context.assets_def.asset_deps.get(context.asset_key, set()):
        event = context.instance.get_latest_materialization_event(key)
        materialization = event.asset_materialization if event else None
        value = materialization.metadata.get(MLFLOW_RUN_ID) if materialization else None
        if value is not None:
            found[key.to_user_string()] = str(value.value)
    return found


def track(
    context: dg.AssetExecutionContext,
    mlflow: MlflowResource,
    *,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    datasets: Sequence[DatasetRef] = (),
) -> dict[str, Any]:
    """Log this materialization to MLflow; returns the metadata entries that link to it."""
    store = mlflow.store()
    run = log_asset_run(
        store,
        asset_key=context.asset_key.to_user_string(),
        dagster_run_id=context.run_id,
        partition=context.partition_key if context.has_partition_key else None,
        upstream_runs=upstream_mlflow_runs(context),
        params=params,
        metrics=metrics,
        tags=tags,
        datasets=datasets,
        ui_url=mlflow.settings().mlflow_ui_url,
    )
    context.log.info(f"MLflow run {run.run_id}: {run.url}")
    return {MLFLOW_RUN_ID: run.run_id, "mlflow_run": dg.MetadataValue.url(run.url)}
