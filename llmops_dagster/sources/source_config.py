"""Source settings: which folders, APIs and SQL tables feed the pipeline (``sources.yaml``).

Kept apart from ``Settings`` (environment) because a source list is structured data that teams
review in a file, while secrets stay in the environment: YAML names env vars, never holds values.

Shape::

    filesystem: {root: data/sample, globs: ["**/*.md", ...], max_bytes: 10000000}
    rest_api: {config_path: llmops_dagster/sources/rest_api.example.yaml}
    sql: {url_env: SOURCE_DB_URL, tables: [{name: articles, primary_key: id}]}
    destination: {name: duckdb}   # or postgres, bigquery... credentials from env (dlt style)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_GLOBS: tuple[str, ...] = (
    "**/*.md",
    "**/*.markdown",
    "**/*.txt",
    "**/*.html",
    "**/*.htm",
    "**/*.pdf",
    "**/*.json",
    "**/*.csv",
)
DEFAULT_MAX_BYTES = 10 * 1024 * 1024


class RecordMapping(BaseModel):
    """How a structured record (API item, SQL row, JSON/CSV entry) becomes a document.

    ``text_fields`` unset means every scalar field is rendered as ``key: value`` lines, which
    keeps unknown schemas searchable without configuration.
    """

    model_config = ConfigDict(extra="forbid")

    id_field: str = "id"
    title_field: str | None = None
    text_fields: list[str] | None = None
    updated_at_field: str | None = "updated_at"
    uri_template: str | None = Field(
        default=None, description="e.g. 'https://api.example.com/articles/{id}'"
    )


class FilesystemSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: Path
    globs: list[str] = Field(default_factory=lambda: list(DEFAULT_GLOBS))
    max_bytes: int = Field(default=DEFAULT_MAX_BYTES, gt=0)
    source_name: str = "fs"
    records: RecordMapping = Field(default_factory=RecordMapping)


class RestApiSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config_path: Path
    source_name: str = "api"


class SqlTableConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    primary_key: str | list[str] = "id"
    cursor: str | None = Field(
        default="updated_at", description="Incremental column; None loads the table in full."
    )
    initial_value: Any = None
    records: RecordMapping | None = None

    @model_validator(mode="after")
    def _default_mapping(self) -> SqlTableConfig:
        if self.records is None:
            pk = self.primary_key if isinstance(self.primary_key, str) else self.primary_key[0]
            self.records = RecordMapping(id_field=pk, updated_at_field=self.cursor)
        return self


class SqlSourceConfig(BaseModel):
    """A SQLAlchemy URL, given directly or (for anything with a password) via ``url_env``."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    url_env: str | None = None
    schema_name: str | None = Field(default=None, alias="schema")
    tables: list[SqlTableConfig]
    source_name: str = "sql"

    @field_validator("tables", mode="before")
    @classmethod
    def _names_to_tables(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _one_url(self) -> SqlSourceConfig:
        if not (self.url or self.url_env):
            raise ValueError("sql source needs 'url' or 'url_env'")
        return self

    def resolved_url(self) -> str:
        if self.url_env:
            value = os.environ.get(self.url_env)
            if not value:
                raise ValueError(
                    f"sql source: environment variable {self.url_env} (sql.url_env) is not set"
                )
            return value
        assert self.url is not None
        return self.url


class DestinationConfig(BaseModel):
    """Any dlt destination by name; credentials come from the environment the dlt way
    (``DESTINATION__<NAME>__CREDENTIALS``) so that no secret is written in YAML."""

    model_config = ConfigDict(extra="forbid")

    name: str = "duckdb"
    credentials_env: str | None = Field(
        default=None, description="Env var holding a connection string, if not dlt's default."
    )


class SourcesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filesystem: FilesystemSourceConfig | None = None
    rest_api: RestApiSourceConfig | None = None
    sql: SqlSourceConfig | None = None
    destination: DestinationConfig = Field(default_factory=DestinationConfig)


def load_sources_config(path: str | Path) -> SourcesConfig:
    """Read ``sources.yaml``; relative paths in it are resolved against the file's folder."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    config = SourcesConfig.model_validate(raw)
    base = path.resolve().parent
    if config.filesystem and not config.filesystem.root.is_absolute():
        config.filesystem.root = base / config.filesystem.root
    if config.rest_api and not config.rest_api.config_path.is_absolute():
        config.rest_api.config_path = base / config.rest_api.config_path
    return config


def default_sources_config(sample_data_dir: Path) -> SourcesConfig:
    """What the demo uses when no ``sources.yaml`` exists: the sample folder only."""
    return SourcesConfig(filesystem=FilesystemSourceConfig(root=sample_data_dir))
