"""Source assets: dlt loads files, REST API records and SQL rows into the warehouse, incrementally.

One ``@dlt_assets`` definition per configured source; asset keys are ``<source>/<table>``
(``fs/files``, ``api/<resource>``, ``sql/<table>``). A fresh dlt source object is built for each
run (sources are one-shot generators), while the pipeline's state keeps the incremental cursors.
"""

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import dagster as dg
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData

from llmops_dagster.resources import MlflowResource, WarehouseResource
from llmops_dagster.sources.dlt_pipelines import (
    WarehouseTarget,
    first_load_serialised,
    loaded_row_counts,
    make_pipeline,
)
from llmops_dagster.sources.source_config import SourcesConfig

#: The steps that rewrite the pipeline's warehouse tables and move the index alias (documents,
#: chunks, embeddings, search_index, the serving tables) share this pool (limit 1 in the shipped
#: instance configs): on DuckDB one writer per file, and on any engine two reindex runs never
#: race for the alias.
WAREHOUSE_WRITERS_POOL = "warehouse"


def ingest_pool(warehouse: WarehouseTarget | WarehouseResource) -> str | None:
    """The pool of the dlt assets, chosen at definition time by the kind of the warehouse the
    assets load into (its resource, or the target built from it).

    DuckDB: the writers' pool (one writer per file). PostgreSQL takes concurrent writers, and
    each source loads its own tables, so no pool: the sources of one run load in parallel.
    """
    return WAREHOUSE_WRITERS_POOL if warehouse.kind == "duckdb" else None


class SourcePrefixedTranslator(DagsterDltTranslator):
    """``<source>/<table without its source prefix>``, in the ``ingest`` group, no fake deps."""

    def __init__(
        self, source_key: str, table_prefix: str, description: str, warehouse_kind: str = "duckdb"
    ) -> None:
        self.source_key = source_key
        self.warehouse_kind = warehouse_kind
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
            description=f"{self.source_description} → warehouse table `{table}` "
            "(dlt, incremental).",
            kinds={"dlt", self.warehouse_kind},
        )


def _make_dlt_assets(
    *,
    name: str,
    target: WarehouseTarget,
    sources: SourcesConfig,
    make_source: Any,
    translator: SourcePrefixedTranslator,
) -> dg.AssetsDefinition:
    pipeline_name = f"llmops_{name}"
    # The decorator needs a pipeline to describe the assets; runs use the warehouse resource's.
    described_by = make_pipeline(target, pipeline_name, sources.destination)

    @dlt_assets(
        dlt_source=make_source(),
        dlt_pipeline=described_by,
        name=f"ingest_{name}",
        dagster_dlt_translator=translator,
        pool=ingest_pool(target),
    )
    def _assets(
        context: dg.AssetExecutionContext,
        dlt: DagsterDltResource,
        warehouse: WarehouseResource,
        mlflow: MlflowResource,
    ) -> Iterator[Any]:
        pipeline = make_pipeline(warehouse.dlt_target(), pipeline_name, sources.destination)
        with ExitStack() as held:
            if warehouse.kind == "postgres":
                # Connecting first fails here, naming LLMOPS_WAREHOUSE_URL, rather than deep
                # inside dlt's loader (an unreachable database leaves the cursors as they were).
                con = held.enter_context(warehouse.get_connection())
                if held.enter_context(first_load_serialised(con, pipeline.dataset_name)):
                    context.log.info(f"first load into {pipeline.dataset_name}: ran alone")
            events = list(dlt.run(context=context, dlt_source=make_source(), dlt_pipeline=pipeline))
        # The first link of the lineage chain: one MLflow run per load, naming dlt's load ids,
        # attached to every table this load materialized.
        trace = pipeline.last_trace
        load_ids = list(trace.last_load_info.loads_ids) if trace and trace.last_load_info else []
        rows = loaded_row_counts(pipeline)
        link = mlflow.log_asset_run(
            context,
            asset_key=f"ingest_{name}",
            params={"pipeline": pipeline.pipeline_name, "dataset": pipeline.dataset_name},
            metrics={f"rows.{table}": float(n) for table, n in rows.items()},
            tags={"dlt.load_ids": ",".join(load_ids), "dlt.pipeline": pipeline.pipeline_name},
        )
        for event in events:
            yield event._replace(
                metadata={**(event.metadata or {}), **link, "dlt_load_ids": ",".join(load_ids)}
            )

    return _assets


def build_ingest_assets(
    sources: SourcesConfig, target: WarehouseTarget, *, sources_file: str = "sources.yaml"
) -> list[dg.AssetsDefinition]:
    """The dlt asset definitions for every source configured in ``sources.yaml``."""
    assets: list[dg.AssetsDefinition] = []
    if sources.filesystem is not None:
        from llmops_dagster.sources.filesystem import make_filesystem_source

        fs = sources.filesystem
        if not fs.root.is_dir():
            raise ValueError(
                f"sources.yaml: filesystem.root {fs.root} is not a folder "
                f"(set LLMOPS_SOURCES_CONFIG or fix {sources_file})"
            )
        assets.append(
            _make_dlt_assets(
                name=fs.source_name,
                target=target,
                sources=sources,
                make_source=lambda: make_filesystem_source(fs.root, fs.globs, fs.max_bytes),
                translator=SourcePrefixedTranslator(
                    fs.source_name, "fs_", f"Files under {fs.root}", target.kind
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
                target=target,
                sources=sources,
                # Secrets are read from the env at run time only, never at definition load.
                make_source=lambda: make_rest_api_source(api.config_path),
                translator=SourcePrefixedTranslator(
                    api.source_name,
                    API_TABLE_PREFIX,
                    f"REST API {shape.dlt_config['client']['base_url']}",
                    target.kind,
                ),
            )
        )
    if sources.sql is not None:
        from llmops_dagster.sources.sql import SQL_TABLE_PREFIX, make_sql_source_from_config

        sql = sources.sql
        assets.append(
            _make_dlt_assets(
                name=sql.source_name,
                target=target,
                sources=sources,
                make_source=lambda: make_sql_source_from_config(sql),
                translator=SourcePrefixedTranslator(
                    sql.source_name, SQL_TABLE_PREFIX, "SQL tables", target.kind
                ),
            )
        )
    return assets
