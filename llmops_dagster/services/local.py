"""The project's local services seen as one: Elasticsearch node, MLflow store, Dagster UI.

``services up --nodes N`` (N > 1) starts a local cluster instead of the single node and records
its size and base port in ``<LLMOPS_HOME>/elasticsearch/cluster/cluster.json``, so ``down`` and
``status`` find the same nodes even if LLMOPS_ES_PORT changed in between.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from llmops_dagster.config import Settings
from llmops_dagster.files import atomic_write_json, publish_dir
from llmops_dagster.services.elasticsearch_local import (
    ElasticsearchSetupError,
    LocalNode,
    Log,
    fetch_distribution,
    node_status,
    start_node,
    stop_node,
)
from llmops_dagster.services.es_cluster import (
    LocalCluster,
    cluster_nodes,
    cluster_status,
    map_nodes,
    start_cluster,
    stop_cluster,
)

if TYPE_CHECKING:
    from llmops_dagster.search.client import ClusterSpec


def _world_traversable(path: Path) -> bool:
    """Whether a user other than the owner can reach ``path`` (every ancestor has o+x)."""
    for folder in [path, *path.parents]:
        if folder.exists() and not folder.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def _relocated_for_es_user(node: LocalNode) -> LocalNode:
    """As root, the node runs as an unprivileged user, which cannot enter a checkout below a
    private (0700) folder such as a mktemp dir; such nodes run from /var/tmp instead, with a
    copy of the distribution. Deterministic, so status/stop find the same pid file."""
    if os.geteuid() != 0 or (
        _world_traversable(node.dist_home) and _world_traversable(node.node_dir)
    ):
        return node
    key = hashlib.sha256(str(node.node_dir).encode()).hexdigest()[:12]
    root = Path("/var/tmp/llmops-elasticsearch")
    dist = root / "dist" / node.dist_home.name
    if node.dist_home.is_dir():
        publish_dir(
            dist,
            lambda folder: shutil.copytree(
                node.dist_home, folder, symlinks=True, dirs_exist_ok=True
            ),
            complete_marker="bin/elasticsearch",
        )
    return replace(node, dist_home=dist, node_dir=root / "nodes" / key)


def local_node(
    settings: Settings, *, node_dir: Path | None = None, port: int | None = None
) -> LocalNode:
    from llmops_dagster.services.elasticsearch_local import distribution_home

    node = LocalNode(
        dist_home=distribution_home(settings.es_dist_dir, settings.local_node.version),
        node_dir=node_dir or settings.es_node_dir,
        port=port or settings.local_node.port,
        heap=settings.local_node.heap,
        java_home=settings.local_node.java_home,
        fallback_java_home=settings.local_node.default_java_home,
        extra_java_opts=settings.local_node.extra_java_opts,
    )
    return _relocated_for_es_user(node)


def cluster_root(settings: Settings) -> Path:
    return settings.home / "elasticsearch" / "cluster"


def local_cluster(
    settings: Settings, *, nodes: int, root: Path | None = None, port: int | None = None
) -> LocalCluster:
    """``nodes`` local nodes on ``port`` (default LLMOPS_ES_PORT) and up, each relocated like
    the single node when root must hand it to the unprivileged Elasticsearch user."""
    from llmops_dagster.services.elasticsearch_local import distribution_home

    cluster = cluster_nodes(
        distribution_home(settings.es_dist_dir, settings.local_node.version),
        root or cluster_root(settings),
        size=nodes,
        port=port or settings.local_node.port,
        heap=settings.local_node.heap,
        java_home=settings.local_node.java_home,
        fallback_java_home=settings.local_node.default_java_home,
        extra_java_opts=settings.local_node.extra_java_opts,
    )
    return map_nodes(cluster, _relocated_for_es_user)


def _manifest(settings: Settings) -> Path:
    return cluster_root(settings) / "cluster.json"


def recorded_cluster(settings: Settings) -> LocalCluster | None:
    """The cluster ``services up --nodes N`` last started (None if there is none on record)."""
    try:
        record = json.loads(_manifest(settings).read_text())
        return local_cluster(settings, nodes=int(record["nodes"]), port=int(record["port"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _record_cluster(settings: Settings, cluster: LocalCluster) -> None:
    record = {"nodes": cluster.size, "port": cluster.nodes[0].port}
    atomic_write_json(_manifest(settings), record, indent=None)


def _cluster_spec(settings: Settings) -> ClusterSpec:
    """The external cluster, as the elasticsearch resource reaches it (secrets resolved)."""
    from llmops_dagster.resources.elasticsearch import ElasticsearchResource

    return ElasticsearchResource.from_settings(settings, resolve_secrets=True).cluster_spec()


def elasticsearch_up(settings: Settings, *, log: Log, nodes: int = 1) -> dict[str, Any]:
    """Start the local node (``nodes`` > 1: a local cluster), or only check the external
    cluster when ELASTICSEARCH_URL is set."""
    if nodes < 1:
        raise ElasticsearchSetupError(f"--nodes must be at least 1, got {nodes}.")
    if settings.uses_external_es:
        if nodes > 1:
            raise ElasticsearchSetupError(
                f"--nodes {nodes} starts local nodes, but ELASTICSEARCH_URL="
                f"{settings.elasticsearch.url} is set: unset it to start a local cluster."
            )
        from llmops_dagster.search.client import check_cluster, make_client

        spec = _cluster_spec(settings)
        health = check_cluster(make_client(spec), spec)
        log(f"Using the cluster at ELASTICSEARCH_URL={settings.elasticsearch.url}: {health.status}")
        return {"url": health.url, "external": True, "status": health.status}
    recorded = recorded_cluster(settings)
    recorded_runs = recorded is not None and cluster_status(recorded)["running"] > 0
    if recorded is not None and recorded_runs and recorded.size != nodes:
        raise ElasticsearchSetupError(
            f"A local {recorded.size}-node cluster is running at {recorded.url}: stop it with "
            f"`llmops-dagster services down` first (or use --nodes {recorded.size})."
        )
    fetch_distribution(settings.es_dist_dir, settings.local_node.version, log=log)
    if nodes == 1:
        _manifest(settings).unlink(missing_ok=True)  # a stopped cluster is no longer current
        return start_node(local_node(settings), log=log)
    single = local_node(settings)
    if node_status(single)["running"]:
        raise ElasticsearchSetupError(
            f"The single local node is running at {single.url}: stop it with "
            "`llmops-dagster services down` before starting a cluster."
        )
    # A running cluster keeps its recorded ports even if LLMOPS_ES_PORT changed since.
    cluster = recorded if recorded is not None and recorded_runs else None
    cluster = cluster or local_cluster(settings, nodes=nodes)
    _record_cluster(settings, cluster)  # first: `services down` can clean up a failed start
    try:
        return start_cluster(cluster, log=log)
    except BaseException:
        if cluster_status(cluster)["running"] == 0:  # nothing left to clean up: forget it
            _manifest(settings).unlink(missing_ok=True)
        raise


def elasticsearch_down(settings: Settings, *, log: Log) -> bool:
    """Stop the single node and the recorded cluster, whichever runs. True if any node ran."""
    if settings.uses_external_es:
        log("ELASTICSEARCH_URL is set: the external cluster is not ours to stop.")
        return False
    stopped = stop_node(local_node(settings), log=log)
    recorded = recorded_cluster(settings)
    if recorded is not None:
        stopped = stop_cluster(recorded, log=log) > 0 or stopped
        _manifest(settings).unlink(missing_ok=True)  # its data stays for the next `up`
    return stopped


def _elasticsearch_status(settings: Settings) -> dict[str, Any]:
    if settings.uses_external_es:
        from llmops_dagster.search.client import (
            ElasticsearchUnavailable,
            check_cluster,
            make_client,
        )

        try:
            spec = _cluster_spec(settings)
            health = check_cluster(make_client(spec), spec)
        except ElasticsearchUnavailable as exc:
            return {
                "url": settings.es_url,
                "external": True,
                "healthy": False,
                "error": str(exc),
            }
        return {
            "url": health.url,
            "external": True,
            "healthy": True,
            "status": health.status,
            "version": health.version,
        }
    recorded = recorded_cluster(settings)
    if recorded is not None:
        status = cluster_status(recorded)
        status.update(external=False, version=settings.local_node.version)
        if not status["healthy"]:
            status["error"] = (
                f"{status['running']} of the {recorded.size} local cluster nodes run "
                f"({status['url']}), health {status['status']}: start them with "
                f"`llmops-dagster services up --nodes {recorded.size}`"
            )
        return status
    status = node_status(local_node(settings))
    status["external"] = False
    status["version"] = settings.local_node.version
    if not status["running"]:
        status["error"] = (
            f"the local node is not running at {settings.local_es_url}: start it with "
            "`llmops-dagster services up`, or set ELASTICSEARCH_URL"
        )
    return status


def _mlflow_status(settings: Settings) -> dict[str, Any]:
    from llmops_dagster.tracking.mlflow_store import MlflowUnavailable, ensure_mlflow

    try:
        store = ensure_mlflow(settings.mlflow_uri, settings.mlflow.experiment)
    except MlflowUnavailable as exc:
        return {"uri": settings.mlflow_uri, "healthy": False, "error": str(exc)}
    return {"uri": store.tracking_uri, "healthy": True, "experiment": store.experiment_name}


def _dagster_status(dagster_home: Path, port: int = 3000) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}"
    try:
        response = httpx.get(f"{url}/server_info", timeout=2)
        response.raise_for_status()
        info = response.json()
        return {"url": url, "running": True, "version": info.get("dagster_version")}
    except (httpx.HTTPError, ValueError):
        return {"url": url, "running": False, "dagster_home": str(dagster_home)}


def services_status(settings: Settings, *, dagster_port: int = 3000) -> dict[str, Any]:
    return {
        "elasticsearch": _elasticsearch_status(settings),
        "mlflow": _mlflow_status(settings),
        "dagster": _dagster_status(settings.dagster_home, dagster_port),
    }
