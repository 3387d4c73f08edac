"""``Settings``: every group, read from the environment, and the values derived from them
(paths under LLMOPS_HOME, the cluster URL, the tracking URI)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from llmops_dagster.config.models import JudgeSettings, ModelSettings
from llmops_dagster.config.pipeline import CorpusSettings, ScheduleSettings
from llmops_dagster.config.serving import ServingSettings
from llmops_dagster.config.stores import (
    DagsterSettings,
    ElasticsearchSettings,
    HomeSettings,
    LocalNodeSettings,
    LocalPostgresSettings,
    MlflowSettings,
    WarehouseSettings,
)

if TYPE_CHECKING:
    from llmops_dagster.search.client import ClusterSpec
    from llmops_dagster.sources.dlt_pipelines import WarehouseTarget


class Settings(BaseModel):
    """All groups; ``Settings()`` reads every group from the environment.

    Tests and tools derive variants with :meth:`override` instead of patching the environment.
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt field must not be ignored silently

    home: Path = Field(
        default_factory=lambda: HomeSettings().home,
        description="LLMOPS_HOME: git-ignored folder for downloads, local stores and caches.",
    )
    elasticsearch: ElasticsearchSettings = Field(default_factory=ElasticsearchSettings)
    local_node: LocalNodeSettings = Field(default_factory=LocalNodeSettings)
    local_postgres: LocalPostgresSettings = Field(default_factory=LocalPostgresSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
    dagster: DagsterSettings = Field(default_factory=DagsterSettings)
    corpus: CorpusSettings = Field(default_factory=CorpusSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    judge: JudgeSettings = Field(default_factory=JudgeSettings)
    schedules: ScheduleSettings = Field(default_factory=ScheduleSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)

    def override(self, *, home: Path | None = None, **groups: dict[str, Any]) -> Settings:
        """A copy with some fields of some groups replaced, e.g.
        ``settings.override(elasticsearch={"url": url}, mlflow={"experiment": "t"})``."""
        update: dict[str, Any] = {}
        if home is not None:
            update["home"] = Path(home)
        for group, values in groups.items():
            current = getattr(self, group)
            update[group] = current.model_copy(update=values)
        return self.model_copy(update=update)

    # --- derived values (defaults that depend on LLMOPS_HOME) ----------------------------------
    @property
    def es_dist_dir(self) -> Path:
        return self.home / "elasticsearch" / "dist"

    @property
    def es_node_dir(self) -> Path:
        return self.home / "elasticsearch" / "node"

    @property
    def local_es_url(self) -> str:
        return f"http://127.0.0.1:{self.local_node.port}"

    @property
    def es_url(self) -> str:
        """ELASTICSEARCH_URL, else the local node."""
        return self.elasticsearch.url or self.local_es_url

    @property
    def uses_external_es(self) -> bool:
        return self.elasticsearch.url is not None

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_uri(self) -> str:
        """MLFLOW_TRACKING_URI, else SQLite under LLMOPS_HOME/mlflow."""
        return self.mlflow.tracking_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def duckdb_path(self) -> Path:
        return self.warehouse.duckdb_path or self.home / "warehouse.duckdb"

    @property
    def models_cache_dir(self) -> Path:
        return self.models.cache_dir or self.home / "models"

    @property
    def serving_store_path(self) -> Path:
        return self.serving.store_path or self.home / "serving" / "serving.db"

    @property
    def dlt_dir(self) -> Path:
        return self.home / "dlt"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def dagster_home(self) -> Path:
        """DAGSTER_HOME, else the project's ``dagster_home/``."""
        return self.dagster.home_dir

    # --- connection specs: built by the resources, the one place each is built ------------------
    def cluster_spec(self) -> ClusterSpec:
        """The cluster, as ``ElasticsearchResource.from_settings(self).cluster_spec()`` builds it
        (secrets resolved: for code outside Dagster, e.g. benchmarks and tests)."""
        from llmops_dagster.resources.elasticsearch import ElasticsearchResource

        return ElasticsearchResource.from_settings(self, resolve_secrets=True).cluster_spec()

    def warehouse_target(self) -> WarehouseTarget:
        """Where dlt loads raw data, as ``WarehouseResource.from_settings(self).dlt_target()``
        builds it (secrets resolved)."""
        from llmops_dagster.resources.warehouse import WarehouseResource

        return WarehouseResource.from_settings(self, resolve_secrets=True).dlt_target()
