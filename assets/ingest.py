"""Source assets: dlt loads files, REST API records and SQL rows into DuckDB, incrementally.

One ``@dlt_assets`` definition per configured source; asset keys are ``<source>/<table>``
(``fs/files``, ``api/<resource>``, ``sql/<table>``). A fresh dlt source object is built for each
run (sources are one-shot generators), while the pipeline's state keeps the incremental cursors.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData

from llmops_dagster.config import Settings
from llmops_dagster.resources import MlflowResource
from llmops_dagster.sources.pipeline import loaded_row_counts, make_pipeline
from llmops_dagster.sources.source_config import SourcesConfig
from llmops_dagster.tracking.lineage import log_asset_run

DUCKDB_POOL = "duckdb"  # one writer per DuckDB file: every asset that writes it shares this pool


class SourcePrefixedTranslator(DagsterDltTranslator):
    """``<source>/<table without its source prefix>``, in the ``ingest`` group, no fake deps."""

    def __init__(self, source_key: str, table_prefix: str, description: str) -> None:
        self.source_key = source_key
        self.table_prefix = table_prefix
        self.source_description = description

    def get_asset_spec(self, data: DltResourceTranslatorData) -> dg.AssetSpec:
        spec = super().get_asset_spec(data)
        table = str(data.resource.table_name or data.resource.name)
        short = table.removeprefix(self.table_prefix) or table
        return spec.replace_attributes(
            key=dg.AssetKey([self.source_key, short]),
            deps=[],
            group_name="ingest",
            owners=["team:data-platform"],
            description=f"{self.source_description} → DuckDB table `{table}` (dlt, incremental).",
            kinds={"dlt", "duckdb"},
        )


def _make_dlt_assets(
    *,
    name: str,
    settings: Settings,
    sources: SourcesConfig,
    make_source: Any,
    translator: SourcePrefixedTranslator,
) -> dg.AssetsDefinition:
    pipeline = make_pipeline(settings, f"llmops_{name}", sources.destination)

    @dlt_assets(
        dlt_source=make_source(),
        dlt_pipeline=pipeline,
        name=f"ingest_{name}",
        dagster_dlt_translator=translator,
        pool=DUCKDB_POOL,
    )
    def _assets(
        context: dg.AssetExecutionContext, dlt: DagsterDltResource, mlflow: MlflowResource
    ) -> Iterator[Any]:
        events = list(dlt.run(context=context, dlt_source=make_source()))
        # The first link of the lineage chain: one MLflow run per load, naming dlt's load ids,
        # attached to every table this load materialized.
        trace = pipeline.last_trace
        load_ids = list(trace.last_load_info.loads_ids) if trace and trace.last_load_info else []
        rows = loaded_row_counts(pipeline)
        run = log_asset_run(
            mlflow.store(),
            asset_key=f"ingest_{name}",
            dagster_run_id=context.run_id,
            params={"pipeline": pipeline.pipeline_name, "dataset": pipeline.dataset_name},
            metrics={f"rows.{table}": float(n) for table, n in rows.items()},
            tags={"dlt.load_ids": ",".join(load_ids), "dlt.pipeline": pipeline.pipeline_name},
            ui_url=mlflow.settings().mlflow_ui_url,
        )
        for event in events:
            yield event._replace(
                metadata={
                    **(event.metadata or {}),
                    "mlflow_run_id": run.run_id,
                    "mlflow_run": dg.MetadataValue.url(run.url),
                    "dlt_load_ids": ",".join(load_ids),
                }
            )

    return _assets


def build_ingest_assets(settings: Settings, sources: SourcesConfig) -> list[dg.AssetsDefinition]:
    """The dlt asset definitions for every source configured in ``sources.yaml``."""
    assets: list[dg.AssetsDefinition] = []
    if sources.filesystem is not None:
        from llmops_dagster.sources.filesystem import make_filesystem_source

        fs = sources.filesystem
        if not fs.root.is_dir():
            raise ValueError(
                f"sources.yaml: filesystem.root {fs.root} is not a folder "
                f"(set LLMOPS_SOURCES_CONFIG or fix {settings.sources_config})"
            )
        assets.append(
            _make_dlt_assets(
                name=fs.source_name,
                settings=settings,
                sources=sources,
                make_source=lambda: make_filesystem_source(fs.root, fs.globs, fs.max_bytes),
                translator=SourcePrefixedTranslator(
                    fs.source_name, "fs_", f"Files under {fs.root}"
                ),
            )
        )
    if sources.rest_api is not None:
        from llmops_dagster.sources.rest_api import (
            API_TABLE_PREFIX,
            load_rest_api_config,
            make_rest_api_source,
        )

        api = sources.rest_api
        shape = load_rest_api_config(api.config_path, resolve_secrets=False)
        assets.append(
            _make_dlt_assets(
                name=api.source_name,
                settings=settings,
                sources=sources,
                # Secrets are read from the env at run time only, never at definition load.
                make_source=lambda: make_rest_api_source(api.config_path),
                translator=SourcePrefixedTranslator(
                    api.source_name,
                    API_TABLE_PREFIX,
                    f"REST API {shape.dlt_config['client']['base_url']}",
                ),
            )
        )
    if sources.sql is not None:
        from llmops_dagster.sources.sql import SQL_TABLE_PREFIX, make_sql_source_from_config

        sql = sources.sql
        assets.append(
            _make_dlt_assets(
                name=sql.source_name,
                settings=settings,
                sources=sources,
                make_source=lambda: make_sql_source_from_config(sql),
                translator=SourcePrefixedTranslator(
                    sql.source_name, SQL_TABLE_PREFIX, "SQL tables"
                ),
            )
        )
    return assets
