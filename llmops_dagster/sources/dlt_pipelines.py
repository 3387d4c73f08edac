"""dlt pipelines bound to one warehouse target: the DuckDB file, or PostgreSQL by one setting.

One place decides where raw data lands, so that every source (and the Dagster assets that run
them) agrees on the database, the dataset (``raw``) and the pipeline state folder. The documents
step reads the raw tables through the same warehouse connection as the pipeline's own tables,
so dlt must load into that very database: ``LLMOPS_WAREHOUSE_URL`` decides both, and a
``sources.yaml`` destination that disagrees with it is an error rather than a silent split.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dlt
from dlt.common.destination import Destination
from dlt.common.pipeline import LoadInfo

from llmops_dagster.sources.secrets import read_secret
from llmops_dagster.sources.source_config import DestinationConfig
from llmops_dagster.warehouse import URL_SETTING, WarehouseConfigError, warehouse_kind
from llmops_dagster.warehouse.base import Warehouse
from llmops_dagster.warehouse.postgres import libpq_url, redact_url

#: Destinations whose tables the documents step can read (through the warehouse interface).
WAREHOUSE_DESTINATIONS = ("duckdb", "postgres")


@dataclass(frozen=True)
class WarehouseTarget:
    """Where raw data lands: the DuckDB file (or the PostgreSQL ``url``), the dataset (schema)
    and dlt's state folder."""

    duckdb_path: Path
    dataset: str = "raw"
    pipelines_dir: Path = Path(".llmops/dlt")
    url: str | None = None

    @property
    def kind(self) -> str:
        """``duckdb`` or ``postgres`` (an unknown URL scheme raises, naming the setting)."""
        return warehouse_kind(self.url)

    @property
    def location(self) -> str:
        return redact_url(self.url) if self.url else str(self.duckdb_path)


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


def check_destination(target: WarehouseTarget, destination: DestinationConfig | None) -> str:
    """The destination name dlt loads into, after checking ``sources.yaml`` against the
    warehouse: an unset ``destination`` follows ``LLMOPS_WAREHOUSE_URL``; one that names another
    engine, or credentials for another database, is a :class:`WarehouseConfigError` saying which two
    settings disagree."""
    kind = target.kind
    destination = destination or DestinationConfig()
    explicit = "name" in destination.model_fields_set
    name = destination.name if explicit else kind
    if name not in WAREHOUSE_DESTINATIONS:
        raise WarehouseConfigError(
            f"sources.yaml destination {name!r}: the documents step reads raw tables from the "
            f"warehouse, so dlt must load into it: use destination {kind!r} (or leave it out) "
            f"and choose the engine with {URL_SETTING}"
        )
    if name != kind:
        where = (
            f"{URL_SETTING}={target.location}"
            if target.url
            else f"{URL_SETTING} is unset, so the warehouse is the DuckDB file {target.location}"
        )
        raise WarehouseConfigError(
            f"sources.yaml destination {name!r} does not match the warehouse ({where}): raw and "
            f"pipeline tables live in one database; set {URL_SETTING} "
            + ("to a postgresql:// URL" if name == "postgres" else "only for PostgreSQL")
            + " or drop destination from sources.yaml"
        )
    if destination.credentials_env:
        value = read_secret(destination.credentials_env)
        expected = libpq_url(target.url) if target.url else None
        if not value or libpq_url(value) != expected:
            raise WarehouseConfigError(
                f"sources.yaml destination.credentials_env={destination.credentials_env} "
                f"{'is not set' if not value else 'names another database'} than the warehouse "
                f"({URL_SETTING}={target.location if target.url else 'unset'}): one setting "
                f"decides the database; drop credentials_env and set {URL_SETTING}"
            )
    return name


def make_destination(target: WarehouseTarget, destination: DestinationConfig | None = None) -> Any:
    """The dlt destination object: the warehouse's own database (see :func:`check_destination`)."""
    if check_destination(target, destination) == "duckdb":
        return _duckdb_destination(target)
    assert target.url is not None
    url = libpq_url(target.url)
    credentials: Any = url
    if urlsplit(url).password is None:
        # dlt insists on a password field; without one in the URL (trust, peer or ~/.pgpass
        # authentication) an empty one lets libpq authenticate as psycopg2 does.
        from dlt.destinations.impl.postgres.configuration import PostgresCredentials

        credentials = PostgresCredentials(url)
        credentials.password = ""
    return Destination.from_reference("postgres", credentials=credentials)


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


# dlt's own tables, shared by every pipeline that loads into one dataset.
DLT_VERSION_TABLE = "_dlt_version"


@contextmanager
def first_load_serialised(con: Warehouse, dataset: str) -> Iterator[bool]:
    """Run the body alone when it is the first load into ``dataset``; yields whether it waited.

    Two pipelines loading into a fresh PostgreSQL dataset at once both create the schema and
    dlt's own tables (``_dlt_version``, ``_dlt_loads``, ``_dlt_pipeline_state``);
    ``CREATE TABLE IF NOT EXISTS`` is not atomic there, so one of them fails with a unique
    violation on ``pg_type``. The first load into a dataset therefore holds a lock named after
    it; once dlt's tables exist, loads run in parallel (their data tables have distinct names).
    A caller that waited finds the tables made and creates nothing shared.
    """
    if con.table_exists(dataset, DLT_VERSION_TABLE):
        yield False
        return
    with con.exclusive(f"dlt-dataset:{dataset}"):
        yield True


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
