"""Source settings: which folders, APIs and SQL tables feed the pipeline (``sources.yaml``).

Kept apart from ``Settings`` (environment) because a source list is structured data that teams
review in a file, while secrets stay out of it: YAML names secrets that dlt's config providers
resolve at run time (:mod:`llmops_dagster.sources.secrets`), never holds values.

Shape::

    filesystem:
      root: data/sample
      globs: ["**/*.md", ...]
      max_bytes: 10000000
      audiences:                      # who may read which files; first matching glob wins
        - {glob: "confidential/hr/**", groups: [hr]}
        - {glob: "confidential/**", groups: [security]}
    rest_api: {config_path: llmops_dagster/sources/rest_api.example.yaml}
    sql: {url_env: SOURCE_DB_URL, tables: [{name: articles, primary_key: id,
                                           records: {audience_field: allowed_groups}}]}
    destination: {name: postgres} # optional: must match the warehouse (LLMOPS_WAREHOUSE_URL)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmops_dagster.access import PUBLIC, AccessError, normalize_audience

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


class SourcesConfigError(ValueError):
    """``sources.yaml`` is invalid; the message names the file and the entry."""


def path_matches(relative_path: str, globs: Sequence[str]) -> bool:
    """Glob match on a POSIX relative path; ``**/`` also matches files at the root.

    ``fnmatch``'s ``*`` crosses ``/``, so ``confidential/**`` and ``confidential/*`` both cover
    the whole subtree: one rule per folder is enough.
    """
    for pattern in globs:
        if fnmatch.fnmatch(relative_path, pattern):
            return True
        if pattern.startswith("**/") and fnmatch.fnmatch(relative_path, pattern[3:]):
            return True
    return False


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
    audience_field: str | None = Field(
        default=None,
        description=(
            "Field/column holding the groups allowed to read the record (a list or a "
            "comma-separated string); unset, or empty on a record → public."
        ),
    )


class AudienceRule(BaseModel):
    """Files matching ``glob`` (relative to the root) may be read by ``groups`` only."""

    model_config = ConfigDict(extra="forbid")

    glob: str = Field(min_length=1)
    groups: list[str]


class FilesystemSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: Path
    globs: list[str] = Field(default_factory=lambda: list(DEFAULT_GLOBS))
    max_bytes: int = Field(default=DEFAULT_MAX_BYTES, gt=0)
    source_name: str = "fs"
    records: RecordMapping = Field(default_factory=RecordMapping)
    #: Ordered rules, FIRST match wins (a specific rule goes before a broad one, so a public
    #: notice inside a confidential folder can be opened up); a file no rule matches is public.
    #: First-match rather than union: a union could only ever widen an audience.
    audiences: list[AudienceRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _valid_audiences(self) -> FilesystemSourceConfig:
        for number, rule in enumerate(self.audiences):
            where = f"filesystem.audiences[{number}] (glob {rule.glob!r})"
            if not rule.groups:
                raise ValueError(f"{where}: groups is empty; write [{PUBLIC}] for a public rule")
            try:
                rule.groups = normalize_audience(rule.groups)
            except AccessError as exc:
                raise ValueError(f"{where}: {exc}") from None
        if self.records.audience_field:
            # A field inside an export must not override (and so widen) the folder's rule.
            raise ValueError(
                "filesystem.records.audience_field is not supported: files take their audience "
                "from filesystem.audiences (by glob)"
            )
        return self

    def audience_for(self, relative_path: str) -> list[str]:
        """The groups allowed to read a file: the first matching rule's, else public."""
        for rule in self.audiences:
            if path_matches(relative_path, [rule.glob]):
                return list(rule.groups)
        return [PUBLIC]


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
    """A SQLAlchemy URL, given directly or (for anything with a password) via ``url_env``: the
    name of a secret dlt resolves (a variable name, or a dotted key such as
    ``sources.sql_database.credentials``)."""

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
            from llmops_dagster.sources.secrets import missing_secret, read_secret

            value = read_secret(self.url_env)
            if not value:
                raise ValueError(missing_secret(self.url_env, "sql source (sql.url_env)"))
            return value
        assert self.url is not None
        return self.url


class DestinationConfig(BaseModel):
    """Where dlt loads: the warehouse itself (``duckdb`` or ``postgres``).

    The documents step reads the raw tables through the warehouse connection, so this can only
    confirm the engine ``LLMOPS_WAREHOUSE_URL`` chose (unset here = follow it); a mismatch is an
    error at definition load (``sources.pipeline.check_destination``). Credentials come from
    ``LLMOPS_WAREHOUSE_URL`` too: one setting, never a second copy in YAML."""

    model_config = ConfigDict(extra="forbid")

    name: str = "duckdb"
    credentials_env: str | None = Field(
        default=None,
        description="dlt secret with the connection string; must equal LLMOPS_WAREHOUSE_URL.",
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
    try:
        config = SourcesConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: "
            f"{str(err['msg']).removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise SourcesConfigError(f"{path}: {problems}") from exc
    base = path.resolve().parent
    if config.filesystem and not config.filesystem.root.is_absolute():
        config.filesystem.root = base / config.filesystem.root
    if config.rest_api and not config.rest_api.config_path.is_absolute():
        config.rest_api.config_path = base / config.rest_api.config_path
    return config


#: The sample corpus's confidential folders (the same rules as the repository's sources.yaml),
#: so that running without a sources.yaml never makes them public.
SAMPLE_AUDIENCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("confidential/hr/**", ("hr",)),
    ("confidential/security/**", ("security",)),
)


def default_sources_config(sample_data_dir: Path) -> SourcesConfig:
    """What the demo uses when no ``sources.yaml`` exists: the sample folder only."""
    return SourcesConfig(
        filesystem=FilesystemSourceConfig(
            root=sample_data_dir,
            audiences=[AudienceRule(glob=g, groups=list(groups)) for g, groups in SAMPLE_AUDIENCES],
        )
    )
