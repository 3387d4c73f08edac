"""Dagster resources: thin, configurable wrappers over the library's settings and clients.

Every field defaults to ``None`` = "use the project settings" (env vars, see config.py), so the
code location runs with no configuration at all, while a deployment sets what it needs, with
secrets through ``dg.EnvVar``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import PrivateAttr

from llmops_dagster.config import Settings, get_settings

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from llmops_dagster.embed.model import Embedder
    from llmops_dagster.tracking.store import MlflowStore


class LlmopsSettingsResource(dg.ConfigurableResource):
    """Where the pipeline's stores live. Unset fields fall back to ``Settings`` from the env."""

    llmops_home: str | None = None
    duckdb_path: str | None = None
    dlt_dataset: str | None = None
    sample_data_dir: str | None = None
    embedding_model: str | None = None
    generator_model: str | None = None

    def settings(self) -> Settings:
        overrides: dict[str, Any] = {
            key: value
            for key, value in {
                "llmops_home": self.llmops_home,
                "duckdb_path": self.duckdb_path,
                "dlt_dataset": self.dlt_dataset,
                "sample_data_dir": self.sample_data_dir,
                "embedding_model": self.embedding_model,
                "generator_model": self.generator_model,
            }.items()
            if value is not None
        }
        base = get_settings()
        return base.model_copy(update=_coerce_paths(overrides)) if overrides else base

    def embedder(self) -> Embedder:
        from llmops_dagster.embed.model import load_embedder

        return load_embedder(self.settings().embedding_model)


def _coerce_paths(overrides: dict[str, Any]) -> dict[str, Any]:
    path_fields = {"llmops_home", "duckdb_path", "sample_data_dir"}
    return {k: Path(v) if k in path_fields else v for k, v in overrides.items()}


class ElasticsearchResource(dg.ConfigurableResource):
    """The search cluster: the local node by default, any cluster through ``url``.

    ``api_key`` / ``password`` should come from ``dg.EnvVar`` so they never appear in run config.
    """

    url: str | None = None
    api_key: str | None = None
    username: str | None = None
    password: str | None = None
    ca_certs: str | None = None
    verify_certs: bool = True
    index_alias: str | None = None

    _client: Any = PrivateAttr(default=None)

    def settings(self) -> Settings:
        from pydantic import SecretStr

        update: dict[str, Any] = {"elasticsearch_verify_certs": self.verify_certs}
        if self.url:
            update["elasticsearch_url"] = self.url.rstrip("/")
        if self.api_key:
            update["elasticsearch_api_key"] = SecretStr(self.api_key)
        if self.username:
            update["elasticsearch_username"] = self.username
        if self.password:
            update["elasticsearch_password"] = SecretStr(self.password)
        if self.ca_certs:
            update["elasticsearch_ca_certs"] = Path(self.ca_certs)
        if self.index_alias:
            update["es_index_alias"] = self.index_alias
        return get_settings().model_copy(update=update)

    @property
    def alias(self) -> str:
        return self.settings().es_index_alias

    def get_client(self) -> Elasticsearch:
        """A checked client: fails fast with the setting to fix if the cluster is unreachable."""
        if self._client is None:
            from llmops_dagster.search.client import check_cluster, make_client

            settings = self.settings()
            client = make_client(settings)
            check_cluster(client, settings)
            self._client = client
        return self._client


class MlflowResource(dg.ConfigurableResource):
    """The MLflow tracking store and registry (SQLite + local artifacts by default)."""

    tracking_uri: str | None = None
    experiment: str | None = None

    def settings(self) -> Settings:
        return self.apply_to(get_settings())

    def apply_to(self, settings: Settings) -> Settings:
        """``settings`` with this resource's tracking store (library calls take one Settings)."""
        update: dict[str, Any] = {}
        if self.tracking_uri:
            update["mlflow_tracking_uri"] = self.tracking_uri
        if self.experiment:
            update["mlflow_experiment"] = self.experiment
        return settings.model_copy(update=update) if update else settings

    def store(self) -> MlflowStore:
        from llmops_dagster.tracking.store import ensure_mlflow

        return ensure_mlflow(self.settings())
