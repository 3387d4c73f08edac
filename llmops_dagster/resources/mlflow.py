"""The MLflow resource: tracking store + registry, and the one way assets write their lineage
run (tags, run URL, the metadata keys that link a materialization to its run)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field, PrivateAttr

from llmops_dagster.tracking.lineage import lineage_tags
from llmops_dagster.tracking.runs import MLFLOW_RUN_ID, MLFLOW_RUN_URL, DatasetRef, RunHandle

if TYPE_CHECKING:
    from llmops_dagster.config import Settings
    from llmops_dagster.tracking.mlflow_store import MlflowStore


class MlflowResource(dg.ConfigurableResource):
    """Tracking store + registry, and the one way assets write their lineage run.

    Every asset records its materialization through :meth:`asset_run` (or the shorthand
    :meth:`log_asset_run`): this resource owns the lineage tags (Dagster run, asset key,
    partition, code version, upstream MLflow runs), the run URL and the metadata keys.
    """

    tracking_uri: str = Field(description="sqlite:///… (default, local) or http(s)://server.")
    experiment: str = Field(default="llmops-dagster", description="MLflow experiment name.")
    ui_url: str = Field(
        default="http://127.0.0.1:5000", description="Where the MLflow UI answers (links)."
    )

    _store: Any = PrivateAttr(default=None)

    @classmethod
    def from_settings(cls, settings: Settings, *, resolve_secrets: bool = False) -> MlflowResource:
        """The tracking store of ``settings.mlflow`` (MLFLOW_TRACKING_URI, else SQLite under
        LLMOPS_HOME). Credentials of a tracking server stay MLflow's own variables
        (``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` / ``_TOKEN``), read by MLflow's client."""
        del resolve_secrets  # no secret among these fields
        return cls(
            tracking_uri=settings.mlflow_uri,
            experiment=settings.mlflow.experiment,
            ui_url=settings.mlflow.ui_url,
        )

    def store(self) -> MlflowStore:
        """The store and experiment, created if needed; fails fast naming the tracking URI."""
        if self._store is None:
            from llmops_dagster.tracking.mlflow_store import ensure_mlflow

            self._store = ensure_mlflow(self.tracking_uri, self.experiment)
        return self._store

    def client(self) -> Any:
        from llmops_dagster.tracking.mlflow_store import mlflow_client

        return mlflow_client(self.store().tracking_uri)

    @staticmethod
    def upstream_runs(context: dg.AssetExecutionContext) -> dict[str, str]:
        """MLflow run ids recorded in the latest materialization of each upstream asset."""
        found: dict[str, str] = {}
        deps: set[dg.AssetKey] = set()
        for key in context.selected_asset_keys:
            deps |= set(context.assets_def.asset_deps.get(key, set()))
        for key in sorted(deps, key=lambda k: k.to_user_string()):
            event = context.instance.get_latest_materialization_event(key)
            materialization = event.asset_materialization if event else None
            value = materialization.metadata.get(MLFLOW_RUN_ID) if materialization else None
            if value is not None:
                found[key.to_user_string()] = str(value.value)
        return found

    @contextmanager
    def asset_run(
        self,
        context: dg.AssetExecutionContext,
        *,
        asset_key: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> Iterator[RunHandle]:
        """An MLflow run for this materialization, tagged as a link of the lineage chain;
        ended FINISHED, or FAILED when the body raises."""
        from llmops_dagster.tracking.runs import open_run

        key = asset_key or context.asset_key.to_user_string()
        all_tags = {
            **lineage_tags(
                asset_key=key,
                dagster_run_id=context.run_id,
                partition=context.partition_key if context.has_partition_key else None,
                upstream_runs=self.upstream_runs(context),
            ),
            **{k: str(v) for k, v in (tags or {}).items()},
        }
        run_name = f"{key.replace('/', '.')}-{context.run_id[:8]}"
        with open_run(self.store(), run_name=run_name, tags=all_tags, ui_url=self.ui_url) as run:
            yield run
        context.log.info(f"MLflow run {run.run_id}: {run.url}")

    def log_asset_run(
        self,
        context: dg.AssetExecutionContext,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, Any] | None = None,
        datasets: Sequence[DatasetRef] = (),
        asset_key: str | None = None,
    ) -> dict[str, Any]:
        """Log one materialization and return the metadata entries that link to its run."""
        with self.asset_run(context, asset_key=asset_key, tags=tags) as run:
            run.log(params=params, metrics=metrics, datasets=datasets)
        return self.run_metadata(run)

    @staticmethod
    def run_metadata(run: RunHandle) -> dict[str, Any]:
        """The metadata keys that link a materialization to its MLflow run."""
        return {MLFLOW_RUN_ID: run.run_id, MLFLOW_RUN_URL: dg.MetadataValue.url(run.url)}
