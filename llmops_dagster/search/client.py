"""Connecting to Elasticsearch with clear errors that name the setting to fix."""

from __future__ import annotations

from dataclasses import dataclass

from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_exceptions

from llmops_dagster.config import Settings


class ElasticsearchUnavailable(RuntimeError):
    """The configured cluster cannot be reached or is unhealthy."""


def _setting_hint(settings: Settings) -> str:
    if settings.uses_external_es:
        return (
            f"ELASTICSEARCH_URL={settings.elasticsearch_url!s} is set; check that URL "
            "(and ELASTICSEARCH_API_KEY / ELASTICSEARCH_USERNAME / ELASTICSEARCH_CA_CERTS)"
        )
    return (
        f"no ELASTICSEARCH_URL is set, so the local node at {settings.local_es_url} is used; "
        "start it with `llmops-dagster services up` or set ELASTICSEARCH_URL"
    )


def make_client(settings: Settings, *, request_timeout: float = 30.0) -> Elasticsearch:
    """An ``Elasticsearch`` client for the configured cluster (nothing is sent yet)."""
    kwargs: dict = {
        "request_timeout": request_timeout,
        "retry_on_timeout": True,
        "max_retries": 3,
    }
    if settings.elasticsearch_api_key is not None:
        kwargs["api_key"] = settings.elasticsearch_api_key.get_secret_value()
    elif settings.elasticsearch_username and settings.elasticsearch_password is not None:
        kwargs["basic_auth"] = (
            settings.elasticsearch_username,
            settings.elasticsearch_password.get_secret_value(),
        )
    if settings.elasticsearch_ca_certs is not None:
        kwargs["ca_certs"] = str(settings.elasticsearch_ca_certs)
    if settings.effective_es_url.startswith("https"):
        kwargs["verify_certs"] = settings.elasticsearch_verify_certs
    return Elasticsearch(settings.effective_es_url, **kwargs)


@dataclass(frozen=True)
class ClusterHealth:
    url: str
    status: str
    number_of_nodes: int
    version: str | None


def check_cluster(client: Elasticsearch, settings: Settings) -> ClusterHealth:
    """Fail fast, naming the setting, when the cluster is unreachable or red.

    Uses ``_cluster/health`` and ``_nodes`` rather than ``GET /``: the minimal distribution
    we run locally has no rest-root module, so ``client.info()`` answers 405 there.
    """
    try:
        health = client.options(request_timeout=10).cluster.health()
        nodes = client.options(request_timeout=10).nodes.info(filter_path="nodes.*.version")
    except es_exceptions.AuthenticationException as exc:
        raise ElasticsearchUnavailable(
            f"Elasticsearch at {settings.effective_es_url} refused the credentials: "
            f"{_setting_hint(settings)}"
        ) from exc
    except (es_exceptions.ConnectionError, es_exceptions.TransportError, OSError) as exc:
        raise ElasticsearchUnavailable(
            f"Elasticsearch is not reachable at {settings.effective_es_url} "
            f"({type(exc).__name__}): {_setting_hint(settings)}"
        ) from exc
    except es_exceptions.ApiError as exc:
        raise ElasticsearchUnavailable(
            f"Elasticsearch at {settings.effective_es_url} answered {exc.meta.status}: "
            f"{exc.message}; {_setting_hint(settings)}"
        ) from exc
    if health.get("status") == "red":
        raise ElasticsearchUnavailable(
            f"Elasticsearch at {settings.effective_es_url} is red: {dict(health)}"
        )
    versions = {n.get("version") for n in (nodes.get("nodes") or {}).values()}
    return ClusterHealth(
        url=settings.effective_es_url,
        status=str(health.get("status")),
        number_of_nodes=int(health.get("number_of_nodes", 0)),
        version=",".join(sorted(v for v in versions if v)) or None,
    )
