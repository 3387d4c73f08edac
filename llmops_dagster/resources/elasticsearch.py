"""The Elasticsearch resource: the search cluster and the layout of the versioned indices."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field, PrivateAttr

from llmops_dagster.resources.secrets import secret_field
from llmops_dagster.search.client import ClusterSpec

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from llmops_dagster.config import Settings


class ElasticsearchResource(dg.ConfigurableResource):
    """The search cluster and the layout of the versioned indices behind ``index_alias``.

    Anchor: an ``EnvVar`` for every secret; the client is made on first use and checked
    (``_cluster/health``) so an unreachable cluster fails fast, naming the setting.
    """

    url: str = Field(default="http://127.0.0.1:9200", description="Cluster URL.")
    api_key: str | None = Field(default=None, description="Use dg.EnvVar('ELASTICSEARCH_API_KEY').")
    username: str | None = None
    password: str | None = Field(default=None, description="Use dg.EnvVar(...).")
    ca_certs: str | None = Field(default=None, description="CA bundle for https clusters.")
    verify_certs: bool = True
    index_alias: str = Field(default="llmops-chunks", description="Alias queries go through.")
    keep_versions: int = Field(default=2, description="Old indices kept for rollback.")
    shards: int = 1
    replicas: int = Field(default=0, description="0 on one node; ≥ 1 on a cluster.")
    hnsw_m: int = 16
    hnsw_ef_construction: int = 100
    request_timeout_s: float = 30.0

    _client: Any = PrivateAttr(default=None)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, resolve_secrets: bool = False
    ) -> ElasticsearchResource:
        """The cluster of ``settings.elasticsearch`` (ELASTICSEARCH_URL, else the local node).

        The password is a secret whenever a username is configured (basic auth needs one). An
        API key is the only sign that the cluster wants one, so it is passed (as an EnvVar)
        when the settings found ELASTICSEARCH_API_KEY where the definitions load.
        """
        es = settings.elasticsearch
        return cls(
            url=settings.es_url,
            api_key=secret_field(
                "ELASTICSEARCH_API_KEY",
                needed=es.api_key is not None,
                resolve_secrets=resolve_secrets,
                value=es.api_key,
            ),
            username=es.username,
            password=secret_field(
                "ELASTICSEARCH_PASSWORD",
                needed=bool(es.username) or es.password is not None,
                resolve_secrets=resolve_secrets,
                value=es.password,
            ),
            ca_certs=str(es.ca_certs) if es.ca_certs else None,
            verify_certs=es.verify_certs,
            index_alias=es.index_alias,
            keep_versions=es.keep_versions,
            shards=es.shards,
            replicas=es.replicas,
            hnsw_m=es.hnsw_m,
            hnsw_ef_construction=es.hnsw_ef_construction,
        )

    @property
    def alias(self) -> str:
        return self.index_alias

    def cluster_spec(self) -> ClusterSpec:
        """How to reach the cluster: the one place a :class:`ClusterSpec` is built."""
        return ClusterSpec(
            url=self.url.rstrip("/"),
            api_key=self.api_key or None,
            username=self.username or None,
            password=self.password or None,
            ca_certs=self.ca_certs or None,
            verify_certs=self.verify_certs,
            hint=(
                f"ELASTICSEARCH_URL={self.url} is the cluster's URL (unset: the local node on "
                "LLMOPS_ES_PORT, started by `llmops-dagster services up`); check it and "
                "ELASTICSEARCH_API_KEY / ELASTICSEARCH_USERNAME / ELASTICSEARCH_CA_CERTS"
            ),
        )

    def get_client(self) -> Elasticsearch:
        """A checked client: fails fast with the setting to fix if the cluster is unreachable."""
        if self._client is None:
            from llmops_dagster.search.client import check_cluster, make_client

            spec = self.cluster_spec()
            client = make_client(spec, request_timeout=self.request_timeout_s)
            check_cluster(client, spec)
            self._client = client
        return self._client

    def index_layout(self) -> dict[str, int]:
        """Keyword arguments of ``search.sync.sync_index`` that shape new indices."""
        return {
            "keep": self.keep_versions,
            "shards": self.shards,
            "replicas": self.replicas,
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.hnsw_ef_construction,
        }
