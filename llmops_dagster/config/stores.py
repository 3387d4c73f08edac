"""Settings groups of the stores and services: the search cluster, the local nodes that stand in
for it, MLflow, the warehouse, Dagster's home and LLMOPS_HOME itself."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmops_dagster.config.base import GROUP_CONFIG, env
from llmops_dagster.config.defaults import PROJECT_ROOT


class HomeSettings(BaseSettings):
    """LLMOPS_HOME: git-ignored folder for downloads, local stores and caches."""

    # An exported but empty LLMOPS_HOME means "the default", as it always has.
    model_config = SettingsConfigDict(**GROUP_CONFIG, env_ignore_empty=True)

    home: Path = Field(default=PROJECT_ROOT / ".llmops", validation_alias=env("LLMOPS_HOME"))


class ElasticsearchSettings(BaseSettings):
    """The search cluster and the index layout (→ ``ElasticsearchResource``)."""

    model_config = GROUP_CONFIG

    url: str | None = Field(
        default=None,
        validation_alias=env("ELASTICSEARCH_URL"),
        description="An existing cluster; several nodes comma-separated (the client fails over "
        "between them). When unset, the local node (services up) is used.",
    )
    api_key: SecretStr | None = Field(default=None, validation_alias=env("ELASTICSEARCH_API_KEY"))
    username: str | None = Field(default=None, validation_alias=env("ELASTICSEARCH_USERNAME"))
    password: SecretStr | None = Field(default=None, validation_alias=env("ELASTICSEARCH_PASSWORD"))
    ca_certs: Path | None = Field(default=None, validation_alias=env("ELASTICSEARCH_CA_CERTS"))
    verify_certs: bool = Field(default=True, validation_alias=env("ELASTICSEARCH_VERIFY_CERTS"))
    index_alias: str = Field(default="llmops-chunks", validation_alias=env("LLMOPS_ES_INDEX_ALIAS"))
    keep_versions: int = Field(
        default=2,
        validation_alias=env("LLMOPS_ES_KEEP_VERSIONS"),
        description="Previous physical indices kept for rollback after a rebuild.",
    )
    shards: int = Field(default=1, validation_alias=env("LLMOPS_ES_SHARDS"))
    replicas: int = Field(
        default=0,
        validation_alias=env("LLMOPS_ES_REPLICAS"),
        description="0 on one node (replicas could never be assigned: health stays yellow); "
        "1 on a cluster (`services up --nodes 3`), so a stopped node loses no shard.",
    )
    hnsw_m: int = Field(default=16, validation_alias=env("LLMOPS_ES_HNSW_M"))
    hnsw_ef_construction: int = Field(
        default=100, validation_alias=env("LLMOPS_ES_HNSW_EF_CONSTRUCTION")
    )

    @field_validator("url")
    @classmethod
    def _strip_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return value.strip().rstrip("/")


class LocalNodeSettings(BaseSettings):
    """The local Elasticsearch node that ``services up`` and the tests start."""

    model_config = GROUP_CONFIG

    version: str = Field(default="9.5.0", validation_alias=env("LLMOPS_ES_VERSION"))
    port: int = Field(default=9200, validation_alias=env("LLMOPS_ES_PORT"))
    heap: str = Field(default="512m", validation_alias=env("LLMOPS_ES_HEAP"))
    java_home: Path | None = Field(
        default=None,
        validation_alias=env("ES_JAVA_HOME"),
        description="The JDK the node must use (21+); unset: the newest one found.",
    )
    default_java_home: Path | None = Field(
        default=None,
        validation_alias=env("JAVA_HOME"),
        description="A JDK tried (if it is 21+) besides those under /usr/lib/jvm and the like.",
    )
    extra_java_opts: str = Field(default="", validation_alias=env("LLMOPS_ES_EXTRA_JAVA_OPTS"))


class LocalPostgresSettings(BaseSettings):
    """The throw-away PostgreSQL cluster the tests and trials start."""

    model_config = GROUP_CONFIG

    bin_dir: Path | None = Field(
        default=None,
        validation_alias=env("LLMOPS_PG_BIN"),
        description="Folder with initdb/pg_ctl; unset: Debian's newest /usr/lib/postgresql/*/bin.",
    )


class MlflowSettings(BaseSettings):
    """Tracking store, registry and UI (→ ``MlflowResource``)."""

    model_config = GROUP_CONFIG

    tracking_uri: str | None = Field(
        default=None,
        validation_alias=env("MLFLOW_TRACKING_URI"),
        description="Defaults to SQLite under LLMOPS_HOME/mlflow.",
    )
    ui_url: str = Field(
        default="http://127.0.0.1:5000",
        validation_alias=env("LLMOPS_MLFLOW_UI_URL"),
        description="Where the MLflow UI answers; Dagster metadata links to runs there.",
    )
    experiment: str = Field(
        default="llmops-dagster", validation_alias=env("LLMOPS_MLFLOW_EXPERIMENT")
    )


class WarehouseSettings(BaseSettings):
    """The DuckDB file dlt loads into, where the pipeline tables live (→ ``WarehouseResource``)."""

    model_config = GROUP_CONFIG

    duckdb_path: Path | None = Field(
        default=None,
        validation_alias=env("LLMOPS_DUCKDB_PATH"),
        description="Defaults to LLMOPS_HOME/warehouse.duckdb.",
    )
    dlt_dataset: str = Field(default="raw", validation_alias=env("LLMOPS_DLT_DATASET"))
    url: str | None = Field(
        default=None,
        validation_alias=env("LLMOPS_WAREHOUSE_URL"),
        description=(
            "postgresql://user[:password]@host[:port]/db: dlt's raw tables (dataset = schema) "
            "and the pipeline's own tables in that database; unset: the DuckDB file."
        ),
    )

    @field_validator("url")
    @classmethod
    def _known_engine(cls, value: str | None) -> str | None:
        from llmops_dagster.warehouse import warehouse_kind

        warehouse_kind(value or None)  # raises, naming LLMOPS_WAREHOUSE_URL
        return value or None


class DagsterSettings(BaseSettings):
    """The Dagster instance that ``llmops-dagster dev`` and the demo use."""

    model_config = GROUP_CONFIG

    home: Path | None = Field(
        default=None,
        validation_alias=env("DAGSTER_HOME"),
        description="Unset: the project's dagster_home/ (telemetry and pop-ups off).",
    )

    @field_validator("home", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def home_dir(self) -> Path:
        return self.home or PROJECT_ROOT / "dagster_home"
