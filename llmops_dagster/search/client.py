"""Connecting to Elasticsearch with clear errors that name the setting to fix."""

from __future__ import annotations

from dataclasses import dataclass, field

from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_exceptions


class ElasticsearchUnavailable(RuntimeError):
    """The configured cluster cannot be reached or is unhealthy."""


@dataclass(frozen=True)
class ClusterSpec:
    """Where the cluster is and how to authenticate; ``hint`` names the settings to fix.

    Secrets are excluded from ``repr`` so a spec in a log line or a traceback shows none.
    """

    url: str
    api_key: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_certs: str | None = None
    verify_certs: bool = True
    hint: str = "check the Elasticsearch URL setting"

    @property
    def urls(self) -> list[str]:
        """``url`` may name several nodes of one cluster, comma-separated: the client spreads
        requests over them and retries another node when one is down."""
        return [part.strip().rstrip("/") for part in self.url.split(",") if part.strip()]


def make_client(spec: ClusterSpec, *, request_timeout: float = 30.0) -> Elasticsearch:
    """An ``Elasticsearch`` client for the cluster (nothing is sent yet)."""
    hosts = spec.urls
    bad = [url for url in hosts if not url.startswith(("http://", "https://"))]
    if not hosts or bad:
        raise ElasticsearchUnavailable(
            f"Elasticsearch URL {spec.url!r} is not a list of http(s):// URLs "
            f"(comma-separated for several nodes): {spec.hint}"
        )
    kwargs: dict = {
        "request_timeout": request_timeout,
        "retry_on_timeout": True,
        "max_retries": 3,
    }
    if spec.api_key:
        kwargs["api_key"] = spec.api_key
    elif spec.username and spec.password is not None:
        kwargs["basic_auth"] = (spec.username, spec.password)
    if spec.ca_certs:
        kwargs["ca_certs"] = str(spec.ca_certs)
    if any(url.startswith("https") for url in hosts):
        kwargs["verify_certs"] = spec.verify_certs
    return Elasticsearch(hosts, **kwargs)


@dataclass(frozen=True)
class ClusterHealth:
    url: str
    status: str
    number_of_nodes: int
    version: str | None


def check_cluster(client: Elasticsearch, spec: ClusterSpec) -> ClusterHealth:
    """Fail fast, naming the setting, when the cluster is unreachable or red.

    Uses ``_cluster/health`` and ``_nodes`` rather than ``GET /``: the minimal distribution
    we run locally has no rest-root module, so ``client.info()`` answers 405 there.
    """
    try:
        health = client.options(request_timeout=10).cluster.health()
        nodes = client.options(request_timeout=10).nodes.info(filter_path="nodes.*.version")
    except es_exceptions.AuthenticationException as exc:
        raise ElasticsearchUnavailable(
            f"Elasticsearch at {spec.url} refused the credentials: {spec.hint}"
        ) from exc
    except (es_exceptions.ConnectionError, es_exceptions.TransportError, OSError) as exc:
        raise ElasticsearchUnavailable(
            f"Elasticsearch is not reachable at {spec.url} ({type(exc).__name__}): {spec.hint}"
        ) from exc
    except es_exceptions.ApiError as exc:
        raise ElasticsearchUnavailable(
            f"Elasticsearch at {spec.url} answered {exc.meta.status}: {exc.message}; {spec.hint}"
        ) from exc
    if health.get("status") == "red":
        raise ElasticsearchUnavailable(f"Elasticsearch at {spec.url} is red: {dict(health)}")
    versions = {n.get("version") for n in (nodes.get("nodes") or {}).values()}
    return ClusterHealth(
        url=spec.url,
        status=str(health.get("status")),
        number_of_nodes=int(health.get("number_of_nodes", 0)),
        version=",".join(sorted(v for v in versions if v)) or None,
    )
