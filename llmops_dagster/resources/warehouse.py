"""The warehouse resource: the DuckDB file (default) or the PostgreSQL database that dlt loads
into and the pipeline's own tables (schema ``llmops``) live in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from dagster_duckdb import DuckDBResource
from pydantic import Field

from llmops_dagster.resources.secrets import secret_field

if TYPE_CHECKING:
    from llmops_dagster.config import Settings
    from llmops_dagster.sources.dlt_pipelines import WarehouseTarget
    from llmops_dagster.warehouse import Warehouse

#: The variable a password-holding warehouse URL is read from at run time.
WAREHOUSE_URL_ENV = "LLMOPS_WAREHOUSE_URL"


class WarehouseResource(DuckDBResource):
    """The warehouse dlt loads into and the pipeline's own tables (schema ``llmops``) live in:
    the DuckDB file ``database`` by default, the PostgreSQL database ``url`` when set.

    Still a Dagster ``DuckDBResource`` (``database`` = the file), with two changes for the
    one-writer rule: the connection is closed even when the body raises (the base class closes
    it only on success, leaving the file locked for the next asset in the same process), and
    it retries a file locked by another process for up to a minute (the ``warehouse`` pool
    serialises writers within one Dagster instance; the retry covers other processes).
    ``get_connection`` yields a :class:`~llmops_dagster.warehouse.Warehouse` adapter for either
    engine (on DuckDB it also answers the plain connection's methods).
    """

    dlt_dataset: str = Field(default="raw", description="dlt dataset (schema) of raw tables.")
    dlt_pipelines_dir: str = Field(description="Where dlt keeps pipeline state (cursors).")
    url: str | None = Field(
        default=None,
        description="postgresql://… (LLMOPS_WAREHOUSE_URL; a dg.EnvVar when it holds a "
        "password); unset: the DuckDB file `database`.",
    )
    lock_wait_s: float = Field(
        default=60.0, description="How long to wait for another process's write lock."
    )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, resolve_secrets: bool = False
    ) -> WarehouseResource:
        """The warehouse of ``settings.warehouse``. A URL with a password is a secret: a
        ``dg.EnvVar`` (never written into run config or the UI); one without stays readable."""
        url = settings.warehouse.url
        secret = bool(url and urlsplit(url).password)
        return cls(
            database=str(settings.duckdb_path),
            dlt_dataset=settings.warehouse.dlt_dataset,
            dlt_pipelines_dir=str(settings.dlt_dir),
            url=secret_field(
                WAREHOUSE_URL_ENV, needed=True, resolve_secrets=resolve_secrets, value=url
            )
            if secret
            else url,
        )

    @property
    def path(self) -> Path:
        return Path(self.database)

    @property
    def kind(self) -> str:
        from llmops_dagster.warehouse import warehouse_kind

        return warehouse_kind(self.url or None)

    @property
    def location(self) -> str:
        """Where the tables are, safe to show (lineage): the file, or the URL sans password."""
        return self.dlt_target().location

    @contextmanager
    def get_connection(self) -> Iterator[Warehouse]:
        from llmops_dagster.warehouse import connect_warehouse

        with connect_warehouse(
            url=self.url or None, duckdb_path=self.path, wait_s=self.lock_wait_s
        ) as con:
            yield con

    def dlt_target(self) -> WarehouseTarget:
        """Where dlt loads raw data: the one place a :class:`WarehouseTarget` is built."""
        from llmops_dagster.sources.dlt_pipelines import WarehouseTarget

        return WarehouseTarget(
            duckdb_path=self.path,
            dataset=self.dlt_dataset,
            pipelines_dir=Path(self.dlt_pipelines_dir),
            url=self.url or None,
        )
